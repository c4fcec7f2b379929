"""The workflow raises domain errors; the API alone decides their HTTP status."""

from __future__ import annotations

import pytest

from services.api.problems import WORKFLOW_STATUS, workflow_problem
from shared import workflow
from shared.workflow import ClaimConflict, InvalidTransition, NotFound, VersionMismatch, WorkflowError


def test_the_workflow_speaks_no_http() -> None:
    errors = [e for e in vars(workflow).values() if isinstance(e, type) and issubclass(e, WorkflowError)]
    assert all("status" not in vars(e) for e in errors)


def test_every_workflow_error_has_its_status() -> None:
    errors = {e for e in vars(workflow).values() if isinstance(e, type) and issubclass(e, WorkflowError)}
    assert errors - {WorkflowError} == set(WORKFLOW_STATUS)


@pytest.mark.parametrize(
    ("error", "status"),
    [(NotFound, 404), (InvalidTransition, 409), (ClaimConflict, 409), (VersionMismatch, 412)],
)
def test_the_api_answers_each_workflow_error_with_its_status(error: type[WorkflowError], status: int) -> None:
    problem = workflow_problem(error("assignment 7: why"))
    assert (problem.status_code, problem.detail) == (status, "assignment 7: why")
