"""The in-memory bus keeps Kafka's semantics: key placement, group membership, committed offsets."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from aiokafka.partitioner import DefaultPartitioner

from shared.bus.base import CommitFailed, OutMessage, Record, partition_for
from shared.bus.memory import MemoryBus, MemoryConsumer

TOPIC = "mentions.raw"

# Kafka's Java client (org.apache.kafka.common.utils.Utils.murmur2 / toPositive) for 1000 partitions,
# as recorded in kafka-python's test_partitioner.py; re-checked with kafka-python 3.0.12.
JAVA_VECTORS = [
    ("", 681),
    ("a", 524),
    ("ab", 434),
    ("abc", 107),
    ("123456789", 566),
    ("\x00 ", 742),
]


# --- partition_for ----------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "partition"), JAVA_VECTORS)
def test_partition_for_matches_kafkas_java_partitioner(key: str, partition: int) -> None:
    assert partition_for(key, 1000) == partition


def test_partition_for_matches_the_kafka_client_the_kafka_bus_uses() -> None:
    keys = [f"mention-{i}" for i in range(300)] + ["caf\u00e9", "\u4e2d\u6587", "\U0001f600", "x" * 1001]
    for partitions in (1, 3, 4, 12):
        every = list(range(partitions))
        for key in keys:
            assert partition_for(key, partitions) == DefaultPartitioner()(key.encode(), every, every), key


def test_partition_for_is_stable_and_in_range() -> None:
    keys = [f"{i:032x}" for i in range(2000)]
    for partitions in (1, 2, 4, 7):
        placed = [partition_for(k, partitions) for k in keys]
        assert placed == [partition_for(k, partitions) for k in keys]
        assert set(placed) == set(range(partitions))  # in range, and every partition gets some keys


# --- the in-memory bus ------------------------------------------------------------------------


def _msg(key: str, value: str, topic: str = TOPIC) -> OutMessage:
    return OutMessage(topic=topic, key=key, value=value.encode(), headers={"h": value})


async def _drain(consumer: MemoryConsumer, *, idle_ms: int = 20) -> list[Record]:
    """Everything the consumer gets until a poll comes back empty."""
    out: list[Record] = []
    while batch := await consumer.getmany(timeout_ms=idle_ms, max_records=7):
        out.extend(batch)
    return out


async def test_same_key_same_partition_and_order_is_kept() -> None:
    bus = MemoryBus(partitions=4)
    for i in range(10):
        await bus.send([_msg("k1", f"a{i}"), _msg("k2", f"b{i}")])
    consumer = bus.consumer([TOPIC], group_id="g")
    await consumer.start()
    records = await _drain(consumer)
    await consumer.stop()
    by_key: dict[str, list[Record]] = {"k1": [], "k2": []}
    for r in records:
        by_key[r.key].append(r)
    assert [r.value.decode() for r in by_key["k1"]] == [f"a{i}" for i in range(10)]
    assert [r.value.decode() for r in by_key["k2"]] == [f"b{i}" for i in range(10)]
    assert {r.partition for r in by_key["k1"]} == {partition_for("k1", 4)}
    assert [r.offset for r in by_key["k1"]] == sorted(r.offset for r in by_key["k1"])
    assert by_key["k1"][3].headers == {"h": "a3"}


async def test_two_members_of_a_group_split_the_partitions_and_see_everything_once() -> None:
    bus = MemoryBus(partitions=4)
    await bus.send([_msg(f"key-{i}", str(i)) for i in range(100)])
    first = bus.consumer([TOPIC], group_id="g")
    second = bus.consumer([TOPIC], group_id="g")
    await first.start()
    await second.start()
    assert len(first.assignment) == len(second.assignment) == 2
    assert set(first.assignment).isdisjoint(second.assignment)
    assert set(first.assignment) | set(second.assignment) == {(TOPIC, p) for p in range(4)}
    seen_first, seen_second = await _drain(first), await _drain(second)
    await first.stop()
    await second.stop()
    assert {(r.topic, r.partition) for r in seen_first} <= set(first.assignment)
    values = Counter(r.value.decode() for r in seen_first + seen_second)
    assert values == Counter(str(i) for i in range(100))


async def test_another_group_reads_everything_independently() -> None:
    bus = MemoryBus(partitions=2)
    await bus.send([_msg(f"key-{i}", str(i)) for i in range(10)])
    one, two = bus.consumer([TOPIC], group_id="g1"), bus.consumer([TOPIC], group_id="g2")
    await one.start()
    await two.start()
    assert len(await _drain(one)) == len(await _drain(two)) == 10
    await one.stop()
    await two.stop()


async def test_uncommitted_records_go_to_a_new_member_after_a_stop() -> None:
    bus = MemoryBus(partitions=4)
    await bus.send([_msg(f"key-{i}", str(i)) for i in range(20)])
    crashed = bus.consumer([TOPIC], group_id="g")
    await crashed.start()
    assert len(await _drain(crashed)) == 20
    await crashed.stop()  # no commit

    successor = bus.consumer([TOPIC], group_id="g")
    await successor.start()
    redelivered = await _drain(successor)
    await successor.stop()
    assert sorted(int(r.value) for r in redelivered) == list(range(20))


async def test_committed_records_are_not_delivered_again() -> None:
    bus = MemoryBus(partitions=4)
    await bus.send([_msg(f"key-{i}", str(i)) for i in range(20)])
    worker = bus.consumer([TOPIC], group_id="g")
    await worker.start()
    records = await _drain(worker)
    await worker.commit(records)
    await worker.stop()
    await bus.send([_msg("late", "20")])

    successor = bus.consumer([TOPIC], group_id="g")
    await successor.start()
    after = await _drain(successor)
    await successor.stop()
    assert [r.value for r in after] == [b"20"]


async def test_a_partial_commit_redelivers_only_the_rest() -> None:
    bus = MemoryBus(partitions=1)
    await bus.send([_msg("k", str(i)) for i in range(10)])
    worker = bus.consumer([TOPIC], group_id="g")
    await worker.start()
    records = await _drain(worker)
    await worker.commit(records[:4])
    await worker.stop()
    assert bus.broker.committed("g", TOPIC, 0) == 4

    successor = bus.consumer([TOPIC], group_id="g")
    await successor.start()
    assert [int(r.value) for r in await _drain(successor)] == list(range(4, 10))
    await successor.stop()


async def test_rewind_returns_to_the_committed_offsets() -> None:
    bus = MemoryBus(partitions=1)
    await bus.send([_msg("k", str(i)) for i in range(5)])
    worker = bus.consumer([TOPIC], group_id="g")
    await worker.start()
    records = await _drain(worker)
    await worker.commit(records[:2])
    await worker.rewind()
    assert [int(r.value) for r in await _drain(worker)] == [2, 3, 4]
    await worker.stop()


async def test_a_rebalance_redelivers_what_was_not_committed_even_to_a_member_that_stays() -> None:
    bus = MemoryBus(partitions=2)
    await bus.send([_msg(f"key-{i}", str(i)) for i in range(10)])
    stays = bus.consumer([TOPIC], group_id="g")
    await stays.start()
    assert len(await _drain(stays)) == 10  # read, not committed
    joins = bus.consumer([TOPIC], group_id="g")
    await joins.start()  # eager rebalance: everyone restarts from the committed offsets
    again = await _drain(stays) + await _drain(joins)
    assert sorted(int(r.value) for r in again) == list(range(10))
    await stays.stop()
    await joins.stop()


async def test_a_commit_after_the_partition_moved_fails() -> None:
    bus = MemoryBus(partitions=2)
    await bus.send([_msg(f"key-{i}", str(i)) for i in range(10)])
    first = bus.consumer([TOPIC], group_id="g")
    await first.start()
    records = await _drain(first)
    second = bus.consumer([TOPIC], group_id="g")
    await second.start()  # rebalance: one of first's partitions moves to second
    with pytest.raises(CommitFailed, match="revoked"):
        await first.commit(records)
    assert bus.broker.committed("g", TOPIC, 0) == bus.broker.committed("g", TOPIC, 1) == 0
    await first.stop()
    await second.stop()


async def test_getmany_waits_for_new_messages_and_times_out_when_idle() -> None:
    bus = MemoryBus(partitions=2)
    consumer = bus.consumer([TOPIC], group_id="g")
    await consumer.start()
    started = time.monotonic()
    assert await consumer.getmany(timeout_ms=50, max_records=10) == []
    assert time.monotonic() - started >= 0.045

    waiting = asyncio.create_task(consumer.getmany(timeout_ms=5000, max_records=10))
    await asyncio.sleep(0.01)
    await bus.send([_msg("k", "wake")])
    records = await asyncio.wait_for(waiting, 2)
    assert [r.value for r in records] == [b"wake"]
    await consumer.stop()


async def test_max_records_bounds_a_batch() -> None:
    bus = MemoryBus(partitions=3)
    await bus.send([_msg(f"key-{i}", str(i)) for i in range(30)])
    consumer = bus.consumer([TOPIC], group_id="g")
    await consumer.start()
    assert len(await consumer.getmany(timeout_ms=10, max_records=4)) == 4
    await consumer.stop()


async def test_a_consumer_that_is_not_started_refuses_to_poll() -> None:
    consumer = MemoryBus().consumer([TOPIC], group_id="g")
    with pytest.raises(RuntimeError, match="not started"):
        await consumer.getmany(timeout_ms=1, max_records=1)
