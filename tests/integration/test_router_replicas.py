"""Two router replicas in one consumer group on the real broker split the partitions between them, and
together store every mention and assignment exactly once."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from devsupport.factories import classified_event
from devsupport.kafka import read_topics
from devsupport.scenario import wait_for
from services.router.bootstrap import build
from services.router.service import RouterService
from shared.bus.codec import encode
from shared.bus.kafka import KafkaBus, KafkaConsumer
from shared.db import AssignmentRow, MentionRow, create_engine, session_factory
from shared.routing import RuleSet
from shared.settings import DEPARTMENTS
from tests.conftest import KafkaEnv

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

N = 2000


async def test_two_replicas_split_the_work(kafka: KafkaEnv, pg_url: str) -> None:
    settings = kafka.settings(database_url=pg_url, topic_partitions=4, consumer_max_records=100)
    engine = create_engine(pg_url)
    buses = [KafkaBus(settings) for _ in range(2)]
    for bus in buses:
        await bus.start()
    await buses[0].ensure_topics(settings.all_topics())
    events = [classified_event(i) for i in range(N)]
    rules = RuleSet.from_file(settings.routing_file)
    expected = sum(len(rules.evaluate(e.mention, e.classification).assignments) for e in events)
    routers = [build(settings, bus=bus, engine=engine) for bus in buses]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(r.run(stop)) for r in routers]
    try:
        # Both members have joined before the load arrives, so the split is between the two of them.
        await wait_for(
            lambda: _assigned(routers), within=60, what="both replicas to get partitions", interval=0.2
        )
        await buses[0].send(
            [encode(topic=settings.topic_classified, key=e.mention.id, event=e, source="/t") for e in events]
        )

        async def stored() -> bool:
            async with session_factory(engine)() as session:
                mentions = await session.scalar(select(func.count()).select_from(MentionRow))
                assignments = await session.scalar(select(func.count()).select_from(AssignmentRow))
            return (mentions, assignments) == (N, expected)

        await wait_for(stored, within=120, what=f"{N} mentions stored by two replicas")
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        for bus in buses:
            await bus.stop()
        await engine.dispose()
    handled = [r.stage.stats.records_in for r in routers]
    assert all(h > 0 for h in handled), f"one replica did all the work: {handled}"
    assert sum(handled) >= N
    routed = await read_topics(
        settings.kafka_bootstrap_servers, [settings.topic_routed(d) for d in DEPARTMENTS]
    )
    assert len({(r.topic, r.key) for r in routed}) == expected


async def _assigned(routers: list[RouterService]) -> bool:
    consumers = [r.stage.consumer for r in routers]
    return all(isinstance(c, KafkaConsumer) and c.assignment() for c in consumers)
