"""`GET /v1/queues`: per department the caller may read, what waits for it (the desk's queue counters).

The SQL is services/api/queries/queues.py; here are the route, its answer and the per-process cache of
the median time to first response.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.auth import PrincipalDep
from services.api.deps import SessionDep
from services.api.queries import queues as queries
from shared.events import utcnow
from shared.settings import DEPARTMENTS

queues_api = APIRouter(prefix="/v1")


class QueueStats(BaseModel):
    department: str
    total: int = Field(description="Every assignment, closed ones included.")
    by_status: dict[str, int]
    open: int = Field(description="new, acknowledged, responded or reopened.")
    open_by_priority: dict[str, int]
    overdue: int = Field(description="Past the SLA without a first response.")
    oldest_open_age_s: float | None = Field(description="Age of the oldest open assignment, in seconds.")
    median_first_response_s: float | None = Field(
        description="Median time from routing to first response, over assignments routed in the window "
        "(computed at most once a minute)."
    )
    responded_in_window: int = Field(description="Assignments routed in the window with a response.")


class Queues(BaseModel):
    window_hours: int
    departments: list[QueueStats]


# The median time to first response sorts every response of the window (98,000 at a million mentions:
# 45 ms of the database's CPU per request), and moves slowly: each API process computes it per department
# and window at most once in this many seconds.
MEDIAN_MAX_AGE_S = 60.0


class _Medians:
    """Per API process: (department, window in hours) -> (when computed (monotonic), (median, count))."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, int], tuple[float, tuple[float | None, int]]] = {}
        # One computation at a time: requests arriving meanwhile wait for it instead of repeating it.
        self.lock = asyncio.Lock()

    async def get(
        self, session: AsyncSession, departments: list[str], window_hours: int, now: datetime
    ) -> dict[str, tuple[float | None, int]]:
        async with self.lock:
            at = time.monotonic()
            stale = [
                d
                for d in departments
                if (d, window_hours) not in self.values
                or at - self.values[(d, window_hours)][0] > MEDIAN_MAX_AGE_S
            ]
            if stale:
                since = now - timedelta(hours=window_hours)
                fresh = await queries.median_first_response(session, stale, since)
                for d in stale:
                    self.values[(d, window_hours)] = (at, fresh.get(d, (None, 0)))
            return {d: self.values[(d, window_hours)][1] for d in departments}


def _medians(request: Request) -> _Medians:
    """The app's cache of medians, made on first use."""
    cache: _Medians | None = getattr(request.app.state, "queue_medians", None)
    if cache is None:
        cache = request.app.state.queue_medians = _Medians()
    return cache


@queues_api.get("/queues", response_model=Queues, tags=["mentions", "queues"])
async def queues(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    window_hours: Annotated[
        int, Query(ge=1, le=24 * 90, description="For the median time to first response.")
    ] = 168,
) -> Queues:
    """Per department the caller may read: counts by status and priority, overdue count, the age of the
    oldest open assignment and the median time to first response."""
    now = utcnow()
    departments = [d for d in DEPARTMENTS if d in principal.readable]
    by_status, by_priority = await queries.counts(session, departments)
    overdue = await queries.overdue_counts(session, departments, now)
    oldest = await queries.oldest_open(session, departments)
    medians = await _medians(request).get(session, departments, window_hours, now)
    return Queues(
        window_hours=window_hours,
        departments=[
            QueueStats(
                department=d,
                total=sum(by_status[d].values()),
                by_status=by_status[d],
                open=sum(by_priority[d].values()),
                open_by_priority=by_priority[d],
                overdue=overdue.get(d, 0),
                oldest_open_age_s=round((now - oldest[d]).total_seconds(), 1) if d in oldest else None,
                median_first_response_s=medians.get(d, (None, 0))[0],
                responded_in_window=medians.get(d, (None, 0))[1],
            )
            for d in departments
        ],
    )
