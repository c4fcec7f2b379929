"""The router on a real broker and a real PostgreSQL: stores once, publishes per department, dead-letters
what it cannot read, and absorbs replays."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from devsupport.factories import classified_event
from devsupport.kafka import group_lag, read_topics
from devsupport.scenario import wait_for
from devsupport.tcpproxy import TcpProxy
from services.router.bootstrap import build
from shared.bus.base import OutMessage
from shared.bus.codec import encode
from shared.bus.kafka import KafkaBus
from shared.db import AssignmentRow, MentionRow, create_engine
from shared.events import MentionClassified
from shared.routing import RuleSet
from shared.settings import DEPARTMENTS, Settings
from tests.conftest import KafkaEnv

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


@pytest.fixture
async def settings(kafka: KafkaEnv, pg_url: str) -> Settings:
    return kafka.settings(database_url=pg_url)


@pytest.fixture
async def bus(settings: Settings) -> AsyncIterator[KafkaBus]:
    bus = KafkaBus(settings)
    await bus.start()
    await bus.ensure_topics(settings.all_topics())
    yield bus
    await bus.stop()


@contextlib.asynccontextmanager
async def running_router(settings: Settings, bus: KafkaBus) -> AsyncIterator[None]:
    engine = create_engine(settings.database_url)
    stop = asyncio.Event()
    task = asyncio.create_task(build(settings, bus=bus, engine=engine).run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await engine.dispose()


async def _counts(url: str) -> tuple[int, int]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            mentions = await conn.scalar(select(func.count()).select_from(MentionRow))
            assignments = await conn.scalar(select(func.count()).select_from(AssignmentRow))
    finally:
        await engine.dispose()
    return int(mentions or 0), int(assignments or 0)


def _expected(settings: Settings, events: list[MentionClassified]) -> int:
    rules = RuleSet.from_file(settings.routing_file)
    return sum(len(rules.evaluate(e.mention, e.classification).assignments) for e in events)


async def test_routes_stores_and_dead_letters(settings: Settings, bus: KafkaBus) -> None:
    events = [classified_event(i) for i in range(30)]
    good = [
        encode(topic=settings.topic_classified, key=e.mention.id, event=e, source="/test") for e in events
    ]
    poison = [
        OutMessage(topic=settings.topic_classified, key="bad-json", value=b"{not json"),
        OutMessage(
            topic=settings.topic_classified,
            key="bad-version",
            value=events[0].model_copy(update={"schema_version": 99}).model_dump_json().encode(),
        ),
    ]
    await bus.send(good[:15] + poison + good[15:])
    expected_assignments = _expected(settings, events)
    async with running_router(settings, bus):

        async def stored() -> bool:
            return await _counts(settings.database_url) == (30, expected_assignments)

        await wait_for(stored, within=60, what="30 routed mentions")
        dlq = await read_topics(settings.kafka_bootstrap_servers, [settings.topic_dlq])
    assert sorted(r.key.decode() for r in dlq) == ["bad-json", "bad-version"]
    reasons = {r.key.decode(): dict(r.headers) for r in dlq}
    assert reasons["bad-json"]["mr_error_type"] == b"PoisonMessage"
    assert b"not a valid MentionClassified" in reasons["bad-json"]["mr_error"]
    assert b"schema_version 99" in reasons["bad-version"]["mr_error"]
    assert reasons["bad-json"]["mr_original_topic"] == settings.topic_classified.encode()
    assert reasons["bad-json"]["mr_stage"] == b"router"
    assert dlq[0].value in (b"{not json", poison[1].value), "the original bytes are kept"

    routed = await read_topics(
        settings.kafka_bootstrap_servers, [settings.topic_routed(d) for d in DEPARTMENTS]
    )
    assert len({(r.key, r.topic) for r in routed}) == expected_assignments


async def test_replayed_events_change_nothing(settings: Settings, bus: KafkaBus) -> None:
    events = [classified_event(i) for i in range(10)]
    messages = [
        encode(topic=settings.topic_classified, key=e.mention.id, event=e, source="/test") for e in events
    ]
    per_pass = _expected(settings, events)
    topics = [settings.topic_routed(d) for d in DEPARTMENTS]
    await bus.send(messages)
    async with running_router(settings, bus):

        async def first_pass() -> bool:
            return await _counts(settings.database_url) == (10, per_pass)

        await wait_for(first_pass, within=60, what="10 mentions")
        # The same events again, twice: a producer retry and a replay.
        await bus.send(messages + messages)

        async def replayed() -> bool:
            lag = await group_lag(
                settings.kafka_bootstrap_servers, settings.group("router"), settings.topic_classified
            )
            return lag == 0

        await wait_for(replayed, within=60, what="the router to consume and commit the replays")
        routed = await read_topics(settings.kafka_bootstrap_servers, topics)
    # Duplicates inside one batch are folded; across batches they are published again.
    assert 2 * per_pass <= len(routed) <= 3 * per_pass
    # At-least-once on the topics, exactly once in the database.
    assert await _counts(settings.database_url) == (10, per_pass)


async def test_database_outage_pauses_the_router_and_loses_nothing(settings: Settings, bus: KafkaBus) -> None:
    url = make_url(settings.database_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    via_proxy = settings.model_copy(
        update={"database_url": url.set(port=proxy.port).render_as_string(hide_password=False)}
    )
    events = [classified_event(i) for i in range(40)]
    messages = [
        encode(topic=settings.topic_classified, key=e.mention.id, event=e, source="/t") for e in events
    ]
    per_mention = _expected(settings, events)
    async with running_router(via_proxy, bus):
        await bus.send(messages[:20])

        async def first_half() -> bool:
            return (await _counts(settings.database_url))[0] == 20

        await wait_for(first_half, within=60, what="the first 20 mentions")
        await proxy.cut()
        await bus.send(messages[20:])
        await asyncio.sleep(3)
        # Nothing stored, nothing committed, nothing dead-lettered while the database is away.
        assert (await _counts(settings.database_url))[0] == 20
        lag = await group_lag(
            settings.kafka_bootstrap_servers, settings.group("router"), settings.topic_classified
        )
        assert lag == 20
        await proxy.restore()

        async def everything() -> bool:
            return await _counts(settings.database_url) == (40, per_mention)

        await wait_for(everything, within=60, what="the router to resume after the outage")
    dlq = await read_topics(settings.kafka_bootstrap_servers, [settings.topic_dlq])
    assert dlq == []
    await proxy.cut()


async def test_a_mention_the_database_refuses_is_dead_lettered_and_its_batch_stored(
    settings: Settings, bus: KafkaBus
) -> None:
    # The batch's one statement fails on the URL longer than its column: the stage retries the batch
    # record by record, stores the others and dead-letters that one with the database's reason.
    events = [classified_event(i) for i in range(12)]
    bad = events[5].model_copy(
        update={"mention": events[5].mention.model_copy(update={"url": "https://e.example/" + "x" * 2000})}
    )
    events[5] = bad
    await bus.send(
        [encode(topic=settings.topic_classified, key=e.mention.id, event=e, source="/t") for e in events]
    )
    good = [e for e in events if e is not bad]
    async with running_router(settings, bus):

        async def stored() -> bool:
            return await _counts(settings.database_url) == (11, _expected(settings, good))

        await wait_for(stored, within=60, what="the 11 mentions that fit")
        dlq = await read_topics(settings.kafka_bootstrap_servers, [settings.topic_dlq])
    assert [r.key.decode() for r in dlq] == [bad.mention.id]
    assert b"too long" in dict(dlq[0].headers)["mr_error"]
