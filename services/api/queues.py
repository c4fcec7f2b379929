"""`GET /v1/queues`: per department the caller may read, what waits for it (the desk's queue counters).

The SQL is services/api/queries/queues.py; here are the route, its answer and the per-process cache of
the median time to first response.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from services.api import conditional
from services.api.auth import PrincipalDep
from services.api.deps import SessionDep, SettingsDep
from services.api.queries import queues as queries
from shared.apikeys import Principal
from shared.events import utcnow
from shared.settings import DEPARTMENTS

queues_api = APIRouter(prefix="/v1")

# The window of the median time to first response, in hours: by default a week, at most 90 days.
WINDOW_DEFAULT_H, WINDOW_MAX_H = 168, 24 * 90


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
    as_of: datetime = Field(
        description="When the overdue counts and the oldest open assignments were read (at most "
        "`MR_API_QUEUE_STATS_MAX_AGE_S` ago): overdue is counted and ages are measured at this time. The "
        "counts by status and priority are read for every request."
    )
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


@dataclass(frozen=True)
class _Snapshot:
    """Every department's overdue count and oldest open assignment, read together at `as_of`."""

    as_of: datetime
    overdue: dict[str, int]
    oldest: dict[str, datetime]


class _Statistics:
    """Per API process: the latest snapshot and the medians. Tools poll the queues; the snapshot (what
    changes with time as well as with the data) is read again when its time step has passed, by one
    request while the others wait for it."""

    def __init__(self) -> None:
        self.snapshot: _Snapshot | None = None
        self.lock = asyncio.Lock()
        self.medians = _Medians()

    async def current(self, session: AsyncSession, step_s: float) -> _Snapshot:
        as_of = _step(utcnow(), step_s)
        if self.snapshot is not None and self.snapshot.as_of == as_of:
            return self.snapshot
        async with self.lock:
            if self.snapshot is None or self.snapshot.as_of != as_of:
                departments = list(DEPARTMENTS)
                self.snapshot = _Snapshot(
                    as_of=as_of,
                    overdue=await queries.overdue_counts(session, departments, as_of),
                    oldest=await queries.oldest_open(session, departments),
                )
            return self.snapshot


def _step(now: datetime, step_s: float) -> datetime:
    """`now` rounded down to the grid of `step_s` seconds (every replica on the same grid); `now` for 0."""
    if step_s <= 0:
        return now
    epoch = now.timestamp()
    return datetime.fromtimestamp(epoch - epoch % step_s, tz=UTC)


def statistics_of(state: Any) -> _Statistics:
    """The app's statistics cache (`app.state`), made on first use."""
    cache: _Statistics | None = getattr(state, "queue_statistics", None)
    if cache is None:
        cache = state.queue_statistics = _Statistics()
    return cache


@dataclass(frozen=True)
class _Figures:
    """What a caller's queue statistics show, and their ETag."""

    snapshot: _Snapshot
    departments: list[str]
    by_status: dict[str, dict[str, int]]
    by_priority: dict[str, dict[str, int]]
    medians: dict[str, tuple[float | None, int]]
    window_hours: int
    tag: str


async def figures(
    statistics: _Statistics, session: AsyncSession, step_s: float, principal: Principal, window_hours: int
) -> _Figures:
    """The figures of `principal`'s departments (the route's, and services/api/revalidate.py's)."""
    snap = await statistics.current(session, step_s)
    departments = [d for d in DEPARTMENTS if d in principal.readable]
    # Current on every request (a few rows the triggers keep): a change shows at once.
    by_status, by_priority = await queries.counts(session, departments)
    medians = await statistics.medians.get(session, departments, window_hours, snap.as_of)
    parts: list[object] = ["queues", window_hours]
    for d in departments:
        parts += [
            sorted(by_status[d].items()),
            sorted(by_priority[d].items()),
            snap.overdue.get(d, 0),
            snap.oldest.get(d),
            medians.get(d),
        ]
    tag = conditional.etag(principal, parts)
    return _Figures(snap, departments, by_status, by_priority, medians, window_hours, tag)


@queues_api.get(
    "/queues",
    response_model=Queues,
    tags=["mentions", "queues"],
    responses={304: {"description": "Not modified: no count, overdue count, oldest or median changed"}},
)
async def queues(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    window_hours: Annotated[
        int, Query(ge=1, le=WINDOW_MAX_H, description="For the median time to first response.")
    ] = WINDOW_DEFAULT_H,
) -> Response:
    """Per department the caller may read: counts by status and priority, overdue count, the age of the
    oldest open assignment and the median time to first response.

    The counts are kept by the database as assignments change and read for every request; each API
    process counts the overdue assignments and finds the oldest open ones at most every
    `MR_API_QUEUE_STATS_MAX_AGE_S` (`as_of`). The `ETag` stays the same while none of the figures
    changes (the ages grow with `as_of`): send it as `If-None-Match` to get a 304 (docs/api.md#polling)."""
    f = request.scope.get(conditional.STALE_COPY)  # read by services/api/revalidate.py already
    if not isinstance(f, _Figures) or f.window_hours != window_hours:
        f = await figures(
            statistics_of(request.app.state),
            session,
            settings.api_queue_stats_max_age_s,
            principal,
            window_hours,
        )
    # No Last-Modified: the counts change at times the API does not record.
    if conditional.is_fresh(request, f.tag):
        return conditional.not_modified(f.tag)
    snap, medians = f.snapshot, f.medians
    body = Queues(
        window_hours=window_hours,
        as_of=snap.as_of,
        departments=[
            QueueStats(
                department=d,
                total=sum(f.by_status[d].values()),
                by_status=f.by_status[d],
                open=sum(f.by_priority[d].values()),
                open_by_priority=f.by_priority[d],
                overdue=snap.overdue.get(d, 0),
                oldest_open_age_s=(
                    round((snap.as_of - snap.oldest[d]).total_seconds(), 1) if d in snap.oldest else None
                ),
                median_first_response_s=medians.get(d, (None, 0))[0],
                responded_in_window=medians.get(d, (None, 0))[1],
            )
            for d in f.departments
        ],
    )
    return conditional.json_response(body.model_dump_json().encode(), f.tag)
