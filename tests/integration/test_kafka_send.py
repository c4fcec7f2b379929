"""KafkaBus.send builds the record batches itself: every message lands once, on the partition aiokafka's
default partitioner picks, in order within its key, with its headers, also when a partition's messages
fill several batches."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.partitioner import DefaultPartitioner

from shared.bus import OutMessage, Record
from shared.bus.kafka import KafkaBus
from tests.conftest import KafkaEnv

PARTITIONS = 3


async def _read(bus: KafkaBus, topics: list[str], want: int) -> list[Record]:
    consumer = bus.consumer(topics, group_id=f"g-{uuid.uuid4().hex[:6]}")
    await consumer.start()
    out: list[Record] = []
    try:

        async def loop() -> None:
            while len(out) < want:
                out.extend(await consumer.getmany(timeout_ms=200, max_records=1000))

        await asyncio.wait_for(loop(), 60)
        # Nothing more comes (no message twice).
        for _ in range(5):
            out.extend(await consumer.getmany(timeout_ms=200, max_records=1000))
    finally:
        await consumer.stop()
    return out


@pytest.mark.parametrize("max_batch_size", [16_384, 262_144])
async def test_messages_land_once_where_the_default_partitioner_puts_them(
    kafka: KafkaEnv, max_batch_size: int
) -> None:
    bus = KafkaBus(kafka.settings(topic_partitions=PARTITIONS, producer_max_batch_size=max_batch_size))
    await bus.start()
    try:
        topics = [f"{kafka.prefix}send.{name}" for name in ("a", "b", "c")]
        await bus.ensure_topics(topics)
        shared_headers = {"ce_type": "mention.routed", "ce_source": "test"}
        # Like the router's events: each key goes to two or three topics, headers shared per type;
        # 2.5 KB values, so that one partition's messages fill several 16 KB batches.
        messages = [
            OutMessage(
                topic=topic,
                key=f"mention-{i % 97}",
                value=f"{i:05d}".encode() + b"x" * 2500,
                headers=shared_headers if i % 2 else {"n": str(i)},
            )
            for i in range(600)
            for topic in topics[: 2 + i % 2]
        ]
        await bus.send(messages)
        records = await _read(bus, topics, len(messages))
    finally:
        await bus.stop()
    assert sorted((r.topic, r.value) for r in records) == sorted((m.topic, m.value) for m in messages)
    every = list(range(PARTITIONS))
    for r in records:
        assert r.partition == DefaultPartitioner()(r.key.encode(), every, every)
        i = int(r.value[:5])
        assert r.headers == (shared_headers if i % 2 else {"n": str(i)})
    for topic in topics:
        for key in {m.key for m in messages}:
            got = [
                int(r.value[:5])
                for r in sorted(records, key=lambda r: r.offset)
                if (r.topic, r.key) == (topic, key)
            ]
            assert got == sorted(got), "order holds within a key"


async def test_a_message_over_the_request_size_is_refused_before_it_is_sent(kafka: KafkaEnv) -> None:
    bus = KafkaBus(kafka.settings(topic_partitions=PARTITIONS))
    await bus.start()
    try:
        topic = f"{kafka.prefix}send.big"
        await bus.ensure_topics([topic])
        with pytest.raises(MessageSizeTooLargeError):
            await bus.send([OutMessage(topic=topic, key="k", value=b"x" * (5 * 1024 * 1024))])
    finally:
        await bus.stop()
