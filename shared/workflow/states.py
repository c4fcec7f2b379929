"""The states, actions and transitions of an assignment, and the errors the workflow raises."""

from __future__ import annotations

from enum import StrEnum

from shared.apikeys import Actor

CE_SOURCE = "/mention-router/workflow"
# The actor of the escalations the workflow makes by itself: no key.
SLA = Actor(name="sla")


class Status(StrEnum):
    NEW = "new"
    ACKNOWLEDGED = "acknowledged"
    RESPONDED = "responded"
    RESOLVED = "resolved"
    DISMISSED = "dismissed"
    REOPENED = "reopened"
    REASSIGNED = "reassigned"


OPEN = frozenset({Status.NEW, Status.ACKNOWLEDGED, Status.RESPONDED, Status.REOPENED})
CLOSED = frozenset({Status.RESOLVED, Status.DISMISSED, Status.REASSIGNED})
# The SLA (time to first response) runs in these.
AWAITING_RESPONSE = frozenset({Status.NEW, Status.ACKNOWLEDGED, Status.REOPENED})


class Action(StrEnum):
    ACKNOWLEDGE = "acknowledge"
    RESPOND = "respond"
    RESOLVE = "resolve"
    DISMISS = "dismiss"
    REOPEN = "reopen"


# action → (states it may start from, state it leads to)
TRANSITIONS: dict[Action, tuple[frozenset[Status], Status]] = {
    Action.ACKNOWLEDGE: (frozenset({Status.NEW, Status.REOPENED}), Status.ACKNOWLEDGED),
    Action.RESPOND: (OPEN, Status.RESPONDED),
    Action.RESOLVE: (OPEN, Status.RESOLVED),
    Action.DISMISS: (OPEN, Status.DISMISSED),
    Action.REOPEN: (frozenset({Status.RESOLVED, Status.DISMISSED}), Status.REOPENED),
}


class WorkflowError(Exception):
    """A change the workflow refuses. Domain errors only: the API decides which HTTP status each gets
    (services/api/problems.py)."""


class NotFound(WorkflowError):
    """No such assignment."""


class InvalidTransition(WorkflowError):
    """The assignment's state does not allow the change."""


class ClaimConflict(WorkflowError):
    """Someone else holds the assignment."""


class VersionMismatch(WorkflowError):
    """The assignment changed since the caller read it (If-Match)."""


def raise_priority(priority: str) -> str:
    """One step more urgent: P4 → P3 → P2 → P1 (P1 stays)."""
    return f"P{max(1, int(priority[1]) - 1)}"
