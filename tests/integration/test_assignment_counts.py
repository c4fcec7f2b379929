"""The assignment counts the queue statistics read (migration 0007) stay equal to counting the assignments
through everything that writes them — the router's batches, replays, workflow transitions, reassignment,
escalation, deleting mentions, truncation — and through concurrent writers, on PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from devsupport.factories import classified_event, memory_router
from services.router.service import RouterService
from shared.bus import Record
from shared.bus.codec import encode
from shared.db import AssignmentRow, MentionRow, create_engine, session_factory
from shared.db.models import AWAITING_STATUSES, OPEN_STATUSES
from shared.events import Department
from shared.workflow import AWAITING_RESPONSE, OPEN, Action, escalate_due, reassign, transition

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


@pytest.fixture(params=["postgres", "sqlite"])
async def engine(request: pytest.FixtureRequest, pg_url: str, sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    url = pg_url if request.param == "postgres" else sqlite_url
    e = create_engine(url)
    yield e
    await e.dispose()


def _router(engine: AsyncEngine, clock: dict[str, datetime]) -> RouterService:
    router: RouterService = memory_router(engine, clock=lambda: clock["now"])
    return router


async def _route(router: RouterService, first: int, n: int) -> None:
    records = []
    for i in range(first, first + n):
        e = classified_event(i)
        m = encode(topic="t", key=e.mention.id, event=e, source="/t")
        records.append(Record(topic="t", partition=0, offset=i, key=m.key, value=m.value))
    await router.handle(records)


async def _assert_counts_match(engine: AsyncEngine) -> dict[tuple[str, str, str], int]:
    async with engine.connect() as conn:
        kept = {
            (d, s, p): int(n)
            for d, s, p, n in await conn.execute(
                text(
                    "SELECT department, status, priority, sum(n) FROM assignment_counts "
                    "GROUP BY department, status, priority HAVING sum(n) <> 0"
                )
            )
        }
        counted = {
            (d, s, p): int(n)
            for d, s, p, n in await conn.execute(
                text(
                    "SELECT department, status, priority, count(*) FROM assignments "
                    "GROUP BY department, status, priority"
                )
            )
        }
    assert kept == counted
    return counted


async def test_counts_follow_every_write(engine: AsyncEngine) -> None:
    clock = {"now": T0}
    router = _router(engine, clock)
    await _route(router, 0, 40)
    counted = await _assert_counts_match(engine)
    assert sum(counted.values()) >= 40
    await _route(router, 0, 40)  # a replay changes nothing
    assert await _assert_counts_match(engine) == counted

    sessions = session_factory(engine)
    async with sessions() as session:
        ids = list(await session.scalars(select(AssignmentRow.id).order_by(AssignmentRow.id)))
    now = T0 + timedelta(hours=1)
    steps = [
        (ids[0], [Action.ACKNOWLEDGE, Action.RESPOND, Action.RESOLVE]),
        (ids[1], [Action.DISMISS, Action.REOPEN]),
        (ids[2], [Action.RESPOND]),
        (ids[3], [Action.ACKNOWLEDGE, Action.DISMISS]),
    ]
    for assignment_id, actions in steps:
        for action in actions:
            async with sessions() as session, session.begin():
                await transition(session, assignment_id, action, actor="t", now=now)
            await _assert_counts_match(engine)

    async with sessions() as session, session.begin():
        row = await session.get(AssignmentRow, ids[4])
        assert row is not None
        target = next(d for d in Department if d.value != row.department)
        await reassign(
            session, ids[4], department=target, actor="t", now=now, settings=router._settings, reason="t"
        )
    await _assert_counts_match(engine)

    # Every waiting assignment is past its SLA a week later: escalation raises priorities.
    async with sessions() as session, session.begin():
        escalated = await escalate_due(session, now=T0 + timedelta(days=7), settings=router._settings)
    assert escalated
    await _assert_counts_match(engine)

    async with sessions() as session, session.begin():
        some = list(await session.scalars(select(MentionRow.id).order_by(MentionRow.id).limit(5)))
        await session.execute(delete(MentionRow).where(MentionRow.id.in_(some)))  # cascades
    await _assert_counts_match(engine)

    if engine.dialect.name == "postgresql":
        async with engine.begin() as conn:
            await conn.execute(text("TRUNCATE assignments CASCADE"))
        assert await _assert_counts_match(engine) == {}


async def test_counts_stay_exact_under_concurrent_writers(engine: AsyncEngine) -> None:
    """Router batches and transitions in parallel transactions: no deadlock (the triggers lock the
    counts in key order) and no lost update."""
    clock = {"now": T0}
    router = _router(engine, clock)
    await _route(router, 0, 30)
    sessions = session_factory(engine)
    async with sessions() as session:
        ids = list(await session.scalars(select(AssignmentRow.id).order_by(AssignmentRow.id)))

    async def move(assignment_id: int) -> None:
        async with sessions() as session, session.begin():
            await transition(session, assignment_id, Action.ACKNOWLEDGE, actor="t", now=T0)

    writers = [_route(_router(engine, clock), 100 + 20 * k, 20) for k in range(4)]
    await asyncio.gather(*writers, *(move(i) for i in ids[:20]))
    counted = await _assert_counts_match(engine)
    assert sum(n for (_, s, _), n in counted.items() if s == "acknowledged") == 20


def test_the_partial_indexes_spell_the_workflow_states() -> None:
    assert set(OPEN_STATUSES) == {s.value for s in OPEN}
    assert set(AWAITING_STATUSES) == {s.value for s in AWAITING_RESPONSE}
