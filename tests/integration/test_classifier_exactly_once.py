"""Exactly-once (MR_EXACTLY_ONCE) on the real broker: the classifier publishes and commits its offsets in
one transaction; an aborted transaction is invisible to read_committed consumers and moves no offset.
The same scenario runs with the setting off (at-least-once), where nothing is transactional."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.structs import ConsumerRecord

from devsupport.factories import classified_event
from devsupport.kafka import group_lag, partitions
from devsupport.scenario import wait_for
from services.classifier.bootstrap import build
from shared.bus.base import OutMessage
from shared.bus.codec import encode
from shared.bus.kafka import KafkaBus
from shared.events import MentionIngested
from tests.conftest import KafkaEnv

pytestmark = pytest.mark.kafka


async def _read_all(
    bootstrap: str, topic: str, *, isolation_level: str, timeout_s: float = 30.0
) -> list[ConsumerRecord]:  # type: ignore[type-arg]
    """Every record of `topic` a consumer with `isolation_level` can see now, read to the end (for
    read_committed: the last stable offset, past aborted records and transaction markers)."""
    tps = await partitions(bootstrap, [topic])
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None, isolation_level=isolation_level
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        out: list[ConsumerRecord] = []  # type: ignore[type-arg]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300, max_records=5000)
            for records in batch.values():
                out.extend(records)
            if all([await consumer.position(tp) >= end[tp] for tp in tps]):
                return out
        raise AssertionError(f"could not read {topic} to its end in {timeout_s}s")
    finally:
        await consumer.stop()


@pytest.mark.parametrize("exactly_once", [True, False], ids=["exactly-once", "at-least-once"])
async def test_the_classifier_publishes_every_mention_once_and_commits(
    kafka: KafkaEnv, exactly_once: bool
) -> None:
    settings = kafka.settings(exactly_once=exactly_once)
    bus = KafkaBus(settings)
    await bus.start()
    stop = asyncio.Event()
    try:
        await bus.ensure_topics(settings.all_topics())
        mentions = [classified_event(i).mention for i in range(30)]
        good = [
            encode(topic=settings.topic_raw, key=m.id, event=MentionIngested(mention=m), source="/t")
            for m in mentions
        ]
        poison = OutMessage(topic=settings.topic_raw, key="garbage", value=b"\x00\xff binary")
        await bus.send([*good[:15], poison, *good[15:]])
        service = build(settings, bus=bus)
        task = asyncio.create_task(service.run(stop))

        async def consumed() -> bool:
            lag = await group_lag(
                settings.kafka_bootstrap_servers, settings.group("classifier"), settings.topic_raw
            )
            return lag == 0

        await wait_for(consumed, within=60, what="the classifier to commit everything")
        stop.set()
        await asyncio.wait_for(task, 30)
    finally:
        stop.set()
        await bus.stop()

    for isolation in ("read_committed", "read_uncommitted"):
        out = await _read_all(
            settings.kafka_bootstrap_servers, settings.topic_classified, isolation_level=isolation
        )
        assert sorted(r.key.decode() for r in out) == sorted(m.id for m in mentions)
    dlq = await _read_all(
        settings.kafka_bootstrap_servers, settings.topic_dlq, isolation_level="read_committed"
    )
    assert [r.key.decode() for r in dlq] == ["garbage"]


async def test_an_aborted_transaction_publishes_nothing_and_moves_no_offset(kafka: KafkaEnv) -> None:
    settings = kafka.settings(exactly_once=True, topic_partitions=1)
    bus = KafkaBus(settings)
    await bus.start()
    group = settings.group("classifier")
    out_topic = settings.topic_classified
    consumer = bus.consumer([settings.topic_raw], group_id=group)
    try:
        await bus.ensure_topics(settings.all_topics())
        await bus.send([OutMessage(topic=settings.topic_raw, key=f"k{i}", value=b"{}") for i in range(5)])
        await consumer.start()
        records = []
        deadline = time.monotonic() + 30
        while len(records) < 5 and time.monotonic() < deadline:
            records += await consumer.getmany(timeout_ms=500, max_records=100)
        assert len(records) == 5
        # 300 KB each on one partition: every output fills a record batch of its own (262,144 bytes at
        # most), which the bus hands to the producer as soon as the next one does not fit.
        outputs = [OutMessage(topic=out_topic, key=r.key, value=b"o" * 300_000) for r in records]
        # The last message is over the producer's size limit: the send fails mid-transaction, after the
        # first batches went to the log, and the transaction is aborted.
        too_big = OutMessage(topic=out_topic, key="big", value=b"x" * (5 * 1024 * 1024))
        with pytest.raises(MessageSizeTooLargeError):
            await bus.send_in_transaction([*outputs[:4], too_big], records, consumer=consumer, group_id=group)
        assert await group_lag(settings.kafka_bootstrap_servers, group, settings.topic_raw) == 5
        committed = await _read_all(
            settings.kafka_bootstrap_servers, out_topic, isolation_level="read_committed"
        )
        assert committed == []
        uncommitted = await _read_all(
            settings.kafka_bootstrap_servers, out_topic, isolation_level="read_uncommitted"
        )
        # Written, then aborted: only read_uncommitted consumers see them.
        assert 0 < len(uncommitted) <= 4

        # The retry commits: the outputs become visible and the offsets move, together.
        await bus.send_in_transaction(outputs, records, consumer=consumer, group_id=group)

        async def committed_offsets() -> bool:
            # The coordinator applies transactional offsets once it has the commit marker.
            return await group_lag(settings.kafka_bootstrap_servers, group, settings.topic_raw) == 0

        await wait_for(committed_offsets, within=15, what="the transaction's offsets")
        committed = await _read_all(
            settings.kafka_bootstrap_servers, out_topic, isolation_level="read_committed"
        )
        assert sorted(r.key.decode() for r in committed) == [f"k{i}" for i in range(5)]
    finally:
        await consumer.stop()
        await bus.stop()
