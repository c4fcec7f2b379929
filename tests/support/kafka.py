"""Reading whole topics back from the real broker, for assertions."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord


async def read_topics(bootstrap: str, topics: list[str], *, timeout_s: float = 30.0) -> list[ConsumerRecord]:  # type: ignore[type-arg]
    """Every record currently in `topics`, from the beginning to the end offsets at call time."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        partitions = [
            TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or [])
        ]
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = [
                TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or [])
            ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        out: list[ConsumerRecord] = []  # type: ignore[type-arg]
        remaining = {tp for tp, off in end.items() if off > 0}
        import time

        deadline = time.monotonic() + timeout_s
        while remaining and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for tp, records in batch.items():
                out.extend(records)
                if records and records[-1].offset + 1 >= end[tp]:
                    remaining.discard(tp)
        if remaining:
            raise AssertionError(f"could not read {sorted(map(str, remaining))} to the end in {timeout_s}s")
        return out
    finally:
        await consumer.stop()


async def end_offsets_total(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        end = await consumer.end_offsets(partitions)
        return sum(end.values())
    finally:
        await consumer.stop()


async def group_lag(bootstrap: str, group: str, topic: str) -> int:
    """How many records of `topic` the consumer group has not committed yet."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    total = await end_offsets_total(bootstrap, topic)
    done = sum(meta.offset for tp, meta in committed.items() if tp.topic == topic and meta.offset > 0)
    return total - done
