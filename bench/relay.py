"""The engine's own ceiling on this broker: the raw produce rate, and a bare consume → produce relay.

Both use the producer and consumer settings the services use (idempotent producer with acks=all, the
same linger and batch size, getmany with the same max_records, commit after the acks) and the same
messages the pipeline gets, so the pipeline can be reported as a fraction of what aiokafka alone does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.bus.base import OutMessage
from shared.kafkaauth import client_options
from shared.settings import Settings

# Sends in flight before the producer waits for acks: bounds memory while keeping the pipe full.
_WINDOW = 5_000


def producer(settings: Settings, *, linger_ms: int | None = None) -> AIOKafkaProducer:
    """A producer configured exactly as shared.bus.kafka.KafkaBus configures the services' producer."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id="mention-router.bench",
        enable_idempotence=True,
        acks="all",
        linger_ms=settings.producer_linger_ms if linger_ms is None else linger_ms,
        max_batch_size=settings.producer_max_batch_size,
        max_request_size=4 * 1024 * 1024,
        request_timeout_ms=30_000,
        **client_options(settings),
    )


async def send_all(
    prod: AIOKafkaProducer, messages: Sequence[OutMessage], *, topic: str | None = None
) -> None:
    """Send `messages` pipelined (a window of futures at a time) and return once all are acknowledged."""
    for i in range(0, len(messages), _WINDOW):
        futures = [
            await prod.send(
                topic or m.topic,
                value=m.value,
                key=m.key.encode(),
                headers=[(k, v.encode()) for k, v in m.headers.items()],
            )
            for m in messages[i : i + _WINDOW]
        ]
        await asyncio.gather(*futures)


@dataclass
class Rate:
    count: int
    seconds: float
    mb: float

    @property
    def per_s(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "count": self.count,
            "seconds": round(self.seconds, 3),
            "throughput_per_s": round(self.per_s, 1),
            "mb_per_s": round(self.mb / self.seconds, 2) if self.seconds > 0 else 0.0,
        }


async def produce_rate(settings: Settings, messages: Sequence[OutMessage], topic: str) -> Rate:
    """How fast one producer puts `messages` on `topic`, from the first send to the last ack."""
    prod = producer(settings)
    await prod.start()
    try:
        # One message first so that metadata and the producer id are in place before the clock starts.
        await send_all(prod, messages[:1], topic=topic)
        started = time.perf_counter()
        await send_all(prod, messages[1:], topic=topic)
        elapsed = time.perf_counter() - started
    finally:
        await prod.stop()
    return Rate(len(messages) - 1, elapsed, sum(len(m.value) for m in messages[1:]) / 1e6)


async def relay(settings: Settings, *, source: str, target: str, count: int, group: str) -> Rate:
    """A bare stage: getmany → produce every record to `target` → await the acks → commit, until
    `count` records went through. What a service's Stage does, minus decode, work and encode."""
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id="mention-router.bench.relay",
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=settings.consumer_max_records,
        fetch_max_wait_ms=100,
    )
    prod = producer(settings)
    await prod.start()
    await consumer.start()
    done = 0
    size = 0
    started: float | None = None
    try:
        while done < count:
            batches = await consumer.getmany(timeout_ms=200, max_records=settings.consumer_max_records)
            if not batches:
                continue
            if started is None:
                started = time.perf_counter()
            futures = []
            offsets: dict[TopicPartition, int] = {}
            for tp, records in batches.items():
                for r in records:
                    futures.append(await prod.send(target, value=r.value, key=r.key, headers=list(r.headers)))
                    size += len(r.value or b"")
                offsets[tp] = records[-1].offset + 1
            await asyncio.gather(*futures)
            await consumer.commit(offsets)
            done += len(futures)
        assert started is not None
        elapsed = time.perf_counter() - started
    finally:
        await consumer.stop()
        await prod.stop()
    return Rate(done, elapsed, size / 1e6)


async def stage_ceiling(settings: Settings, messages: Sequence[OutMessage]) -> Rate:
    """The bare relay over `messages`, on two topics of the run's own: the ceiling a stage measured
    alone is compared with (bench.router_bench, bench.classifier_alone)."""
    from bench import infra

    relay_in, relay_out = settings.topic("bench.relay.in"), settings.topic("bench.relay.out")
    await infra.create_topics(
        settings.kafka_bootstrap_servers, [relay_in, relay_out], partitions=settings.topic_partitions
    )
    prod = producer(settings)
    await prod.start()
    try:
        await send_all(prod, messages, topic=relay_in)
    finally:
        await prod.stop()
    return await relay(
        settings, source=relay_in, target=relay_out, count=len(messages), group=settings.group("relay")
    )
