"""What the router's batch write stores, on PostgreSQL (one statement per batch) and on SQLite (the embedded
default): every mention, topic and assignment exactly once whatever the duplicates inside a batch and
across batches, each row holding what the event and the decision say; a large batch written in parts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from devsupport.factories import classified_event, memory_router
from services.router.service import RouterService
from shared.bus import MemoryBus, Record
from shared.bus.codec import encode
from shared.db import AssignmentRow, MentionRow, MentionTopicRow, create_engine, session_factory
from shared.events import MentionClassified
from shared.mentionrows import mention_from_row
from shared.routing import RuleSet
from shared.settings import BusKind, Settings

pytestmark = [pytest.mark.postgres]

NOW = datetime(2026, 11, 26, 10, 30, 15, 123456, tzinfo=UTC)


@pytest.fixture(params=["postgres", "sqlite"])
async def engine(request: pytest.FixtureRequest, pg_url: str, sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    e = create_engine(pg_url if request.param == "postgres" else sqlite_url)
    yield e
    await e.dispose()


def _records(events: list[MentionClassified]) -> list[Record]:
    out = []
    for n, e in enumerate(events):
        m = encode(topic="t", key=e.mention.id, event=e, source="/t")
        out.append(Record(topic="t", partition=0, offset=n, key=m.key, value=m.value))
    return out


async def test_duplicates_within_and_across_batches_are_stored_once(engine: AsyncEngine) -> None:
    settings = Settings().model_copy(update={"database_url": "unused", "bus": BusKind.MEMORY})
    rules = RuleSet.from_file(settings.routing_file)
    router = RouterService(
        settings=settings, bus=MemoryBus(), sessions=session_factory(engine), rules=rules, clock=lambda: NOW
    )
    events = [classified_event(i, influence=1 + i % 3) for i in range(12)]
    # A near-duplicate is stored, linked to its original, without assignments.
    copy = classified_event(40)
    events.append(
        copy.model_copy(update={"mention": copy.mention.model_copy(update={"near_duplicate_of": "x"})})
    )
    batches = [
        events[:6] + events[2:4],  # duplicates inside the batch
        events[4:10],  # two of the first batch again
        events[8:] + events[:3],  # a redelivery of both
        events,  # a replay of everything
    ]
    for batch in batches:
        result = await router.handle(_records(batch))
        assert not result.dead

    async with session_factory(engine)() as session:
        mentions = {r.id: r for r in await session.scalars(select(MentionRow))}
        topics = sorted((r.mention_id, r.topic) for r in await session.scalars(select(MentionTopicRow)))
        assignments = list(await session.scalars(select(AssignmentRow)))

    assert len(mentions) == len(events)
    assert topics == sorted((e.mention.id, t.name) for e in events for t in e.classification.topics)
    expected = {}
    for e in events[:-1]:
        decision = rules.evaluate(e.mention, e.classification)
        for a in decision.assignments:
            expected[(e.mention.id, a.department.value)] = (
                a.priority.value,
                a.sla_minutes,
                a.rules,
                decision.tags,
            )
    assert len(assignments) == len(expected)
    for row in assignments:
        priority, sla, by, tags = expected[(row.mention_id, row.department)]
        assert (row.priority, row.sla_minutes, row.rules, row.tags) == (priority, sla, list(by), list(tags))
        assert (row.status, row.version, row.escalation_level, row.assignee) == ("new", 1, 0, None)
        assert row.sla_due_at == row.next_escalation_at == NOW + timedelta(minutes=sla)
        assert row.created_at == row.updated_at == row.routed_at == NOW
    for e in events:
        m = mentions[e.mention.id]
        decision = rules.evaluate(e.mention, e.classification)
        assert mention_from_row(m) == e.mention
        assert m.classification == e.classification.model_dump(mode="json")
        assert (m.sentiment, m.intent, m.language) == (
            e.classification.sentiment.value,
            e.classification.intent.value,
            e.classification.language,
        )
        assert (m.sentiment_score, m.urgency) == (
            e.classification.sentiment_score,
            e.classification.urgency,
        )
        assert m.topics == [t.name for t in e.classification.topics]
        assert (m.matched_rules, m.tags) == (list(decision.matched_rules), list(decision.tags))
        assert (m.ingested_at, m.classified_at, m.routed_at) == (e.ingested_at, e.classified_at, NOW)
        assert m.rules_version == int(rules.version)


def _router(engine: AsyncEngine) -> RouterService:
    router: RouterService = memory_router(engine, clock=lambda: NOW)
    return router


async def _counts(engine: AsyncEngine) -> tuple[int, int, int]:
    async with session_factory(engine)() as session:
        return (
            len(list(await session.scalars(select(MentionRow.id)))),
            len(list(await session.scalars(select(MentionTopicRow.topic)))),
            len(list(await session.scalars(select(AssignmentRow.id)))),
        )


async def test_a_large_batch_written_in_parts_stores_and_routes_each_mention_once(
    engine: AsyncEngine,
) -> None:
    router = _router(engine)
    rules = router.rules
    events = [classified_event(i) for i in range(400)]
    # Over three parts, with duplicates of the first part's mentions in the last one.
    batch = events + events[:20]
    result = await router.handle(_records(batch))
    assert not result.dead
    per_mention = [len(rules.evaluate(e.mention, e.classification).assignments) for e in events]
    assert len(result.out) == sum(per_mention)
    assert len({(m.key, m.topic) for m in result.out}) == len(result.out), "each event once"
    expected = (len(events), sum(len(e.classification.topics) for e in events), sum(per_mention))
    assert await _counts(engine) == expected
    # The same batch again changes nothing.
    await router.handle(_records(batch))
    assert await _counts(engine) == expected


async def test_a_part_that_cannot_be_stored_fails_the_batch_and_the_retry_completes_it(pg_url: str) -> None:
    engine = create_engine(pg_url)
    try:
        router = _router(engine)
        events = [classified_event(i) for i in range(400)]
        bad = events[300]
        events[300] = bad.model_copy(
            update={"mention": bad.mention.model_copy(update={"url": "https://e.example/" + "x" * 2000})}
        )
        with pytest.raises(DBAPIError, match="too long"):
            await router.handle(_records(events))
        # The two parts before the one holding it are stored (their offsets are not committed).
        assert (await _counts(engine))[0] == 256
        # What the stage does next: the records one by one; the parts stored already change nothing.
        for event in events:
            try:
                await router.handle(_records([event]))
            except DBAPIError:
                assert event is events[300]
        good = events[:300] + events[301:]
        rules = router.rules
        assert await _counts(engine) == (
            399,
            sum(len(e.classification.topics) for e in good),
            sum(len(rules.evaluate(e.mention, e.classification).assignments) for e in good),
        )
    finally:
        await engine.dispose()
