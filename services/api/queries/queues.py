"""The SQL of the queue statistics (`GET /v1/queues`): counts by status and priority, overdue counts, the
oldest open assignment and the median time to first response, per department.

Each reads an index or a table kept for it (migration 0007), so that the statistics cost the same at a
million mentions as at a thousand (python -m bench.api_bench, docs/performance.md).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.queries import driver
from shared.db import AssignmentCountRow, AssignmentRow
from shared.db.models import AWAITING_STATUSES, OPEN_STATUSES

# The status lists are rendered as literals so that PostgreSQL can match the partial indexes of
# migration 0007 (ix_assignments_awaiting_sla, ix_assignments_open_created) in every plan.
_AWAITING = AssignmentRow.status.in_(
    bindparam("awaiting", AWAITING_STATUSES, expanding=True, literal_execute=True)
)
_STILL_OPEN = AssignmentRow.status.in_(bindparam("open", OPEN_STATUSES, expanding=True, literal_execute=True))


_COUNTS_SQL = (
    "SELECT department, status, priority, n FROM assignment_counts "
    "WHERE department = ANY($1::varchar[]) AND n <> 0 ORDER BY department, status, priority"
)


async def counts(
    session: AsyncSession, departments: Sequence[str]
) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]]]:
    """Per department, its assignments by status, and its open ones by priority.

    The counts the triggers of migration 0007 keep per department, status and priority: counting every
    assignment ever routed took 230 ms at 1.7M assignments (python -m bench.api_bench)."""
    by_status: dict[str, dict[str, int]] = {d: {} for d in departments}
    by_priority: dict[str, dict[str, int]] = {d: {} for d in departments}
    rows: Any
    pg = await driver.connection(session)
    if pg is not None:  # every queues request reads these: straight through asyncpg (queries/driver.py)
        rows = await driver.call(session, pg.fetch, _COUNTS_SQL, list(departments))
    else:
        rows = await session.execute(
            select(
                AssignmentCountRow.department,
                AssignmentCountRow.status,
                AssignmentCountRow.priority,
                AssignmentCountRow.n,
            )
            .where(AssignmentCountRow.department.in_(departments), AssignmentCountRow.n != 0)
            .order_by(AssignmentCountRow.department, AssignmentCountRow.status, AssignmentCountRow.priority)
        )
    for department, state, priority, n in rows:
        by_status[department][state] = by_status[department].get(state, 0) + int(n)
        if state in OPEN_STATUSES:
            by_priority[department][priority] = by_priority[department].get(priority, 0) + int(n)
    return by_status, by_priority


async def overdue_counts(session: AsyncSession, departments: Sequence[str], now: datetime) -> dict[str, int]:
    """Per department, its assignments past their SLA without a first response (none: left out)."""
    rows = await session.execute(
        select(AssignmentRow.department, func.count())
        .where(AssignmentRow.department.in_(departments), _AWAITING, AssignmentRow.sla_due_at < now)
        .group_by(AssignmentRow.department)
    )
    return {department: int(n) for department, n in rows}


async def oldest_open(session: AsyncSession, departments: Sequence[str]) -> dict[str, datetime]:
    """Per department, when its oldest open assignment was made (none open: left out)."""
    if not departments:
        return {}
    # One min() per department, each the first entry of the partial index (a GROUP BY would read every
    # open assignment's entry).
    firsts = (
        select(func.min(AssignmentRow.created_at))
        .where(AssignmentRow.department == d, _STILL_OPEN)
        .scalar_subquery()
        .label(f"oldest_{i}")
        for i, d in enumerate(departments)
    )
    row = (await session.execute(select(*firsts))).one()
    return {
        department: created if created.tzinfo else created.replace(tzinfo=UTC)
        for department, created in zip(departments, row, strict=True)
        if created is not None
    }


async def median_first_response(
    session: AsyncSession, departments: list[str], since: datetime
) -> dict[str, tuple[float | None, int]]:
    """Per department, the median seconds from routing to first response over the assignments made
    since `since`, and how many there were (none responded: left out)."""
    if not departments:
        return {}
    if session.get_bind().dialect.name == "postgresql":
        rows = await session.execute(
            text(
                "SELECT department, percentile_cont(0.5) WITHIN GROUP "
                "(ORDER BY extract(epoch FROM first_response_at - created_at)), count(*) "
                "FROM assignments WHERE department = ANY(:d) AND created_at >= :since "
                "AND first_response_at IS NOT NULL GROUP BY department"
            ),
            {"d": departments, "since": since},
        )
        return {d: (round(float(m), 1), int(n)) for d, m, n in rows}
    durations: dict[str, list[float]] = {}
    for department, created, responded in await session.execute(
        select(AssignmentRow.department, AssignmentRow.created_at, AssignmentRow.first_response_at).where(
            AssignmentRow.department.in_(departments),
            AssignmentRow.created_at >= since,
            AssignmentRow.first_response_at.is_not(None),
        )
    ):
        if responded is not None:
            durations.setdefault(department, []).append((responded - created).total_seconds())
    return {d: (round(statistics.median(v), 1), len(v)) for d, v in durations.items()}
