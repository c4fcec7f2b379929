"""Reading whole topics back from the real broker, for assertions. `security` is what
shared.kafkaauth.client_options gives for a secured broker (none for a plaintext one)."""

from __future__ import annotations

import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord


async def partitions(bootstrap: str, topics: list[str], **security: Any) -> list[TopicPartition]:
    """Every partition of `topics`, as the cluster describes them (not a client's cached metadata)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **security)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    out = [TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]]
    missing = set(topics) - {tp.topic for tp in out}
    if missing:
        raise AssertionError(f"topics {sorted(missing)} do not exist")
    return sorted(out)


async def read_topics(
    bootstrap: str, topics: list[str], *, timeout_s: float = 30.0, missing_ok: bool = False, **security: Any
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record currently in `topics`, from the beginning to the end offsets at call time.
    With `missing_ok`, a topic that does not exist (nothing was ever published) reads as empty."""
    if missing_ok:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **security)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
        finally:
            await admin.close()
        topics = [t for t in topics if t in existing]
        if not topics:
            return []
    tps = await partitions(bootstrap, topics, **security)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None, **security
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        out: list[ConsumerRecord[bytes, bytes]] = []
        remaining = {tp for tp, off in end.items() if off > 0}
        deadline = time.monotonic() + timeout_s
        while remaining and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for tp, records in batch.items():
                out.extend(r for r in records if r.offset < end[tp])
                if records and records[-1].offset + 1 >= end[tp]:
                    remaining.discard(tp)
        if remaining:
            raise AssertionError(f"could not read {sorted(map(str, remaining))} to the end in {timeout_s}s")
        return out
    finally:
        await consumer.stop()


async def end_offsets_total(bootstrap: str, topic: str, **security: Any) -> int:
    tps = await partitions(bootstrap, [topic], **security)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None, **security
    )
    await consumer.start()
    try:
        end = await consumer.end_offsets(tps)
        return sum(end.values())
    finally:
        await consumer.stop()


async def group_lag(bootstrap: str, group: str, topic: str, **security: Any) -> int:
    """How many records of `topic` the consumer group has not committed yet."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **security)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    total = await end_offsets_total(bootstrap, topic, **security)
    done: int = sum(meta.offset for tp, meta in committed.items() if tp.topic == topic and meta.offset > 0)
    return total - done
