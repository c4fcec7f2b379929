"""A database session that cannot close (the database went away mid-request) never replaces the answer
the route decided: the client still gets it (seen once in CI as a dropped connection instead of a 503)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import HTTPException

from services.api.deps import get_session


class _Unclosable:
    async def close(self) -> None:
        raise RuntimeError("connection was closed in the middle of operation")


def _request() -> Any:
    return SimpleNamespace(
        method="POST", app=SimpleNamespace(state=SimpleNamespace(sessions=_Unclosable, read_sessions=None))
    )


async def test_a_failed_close_after_an_answer_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    dependency = get_session(_request())
    await anext(dependency)
    with pytest.raises(StopAsyncIteration):
        await anext(dependency)
    assert "closing a database session failed" in caplog.text


async def test_the_routes_own_error_still_reaches_the_client() -> None:
    dependency = get_session(_request())
    await anext(dependency)
    with pytest.raises(HTTPException) as raised:
        await dependency.athrow(HTTPException(503, "the database is unavailable"))
    assert raised.value.status_code == 503
