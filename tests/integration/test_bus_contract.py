"""One contract, two buses: the in-memory twin must behave like Kafka where the services rely on it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from bench.infra import delete_topics
from shared.bus import Bus, Consumer, MemoryBus, OutMessage, Reader, Record
from shared.bus.base import partition_for
from shared.bus.kafka import KafkaBus
from tests.conftest import KafkaEnv

PARTITIONS = 4


@pytest.fixture(params=["memory", "kafka"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    if request.param == "memory":
        yield MemoryBus(partitions=PARTITIONS)
        return
    # The `kafka` fixture's own setup, inline (an async fixture cannot be asked for by name here).
    bootstrap: str = request.getfixturevalue("kafka_bootstrap")
    env = KafkaEnv(bootstrap=bootstrap, prefix=f"t{uuid.uuid4().hex[:10]}.")
    kafka_bus = KafkaBus(env.settings(topic_partitions=PARTITIONS))
    await kafka_bus.start()
    try:
        yield kafka_bus
    finally:
        await kafka_bus.stop()
        await delete_topics(bootstrap, env.prefix)


def _topic() -> str:
    return f"contract.{uuid.uuid4().hex[:10]}"


def _messages(topic: str, n: int, keys: int = 10) -> list[OutMessage]:
    return [
        OutMessage(topic=topic, key=f"key-{i % keys}", value=f"value-{i}".encode(), headers={"h": str(i)})
        for i in range(n)
    ]


async def _drain(consumer: Consumer | Reader, want: int, *, within: float = 30.0) -> list[Record]:
    """Poll until `want` records arrived (or fail after `within` seconds)."""
    out: list[Record] = []

    async def loop() -> None:
        while len(out) < want:
            out.extend(await consumer.getmany(timeout_ms=200, max_records=1000))

    await asyncio.wait_for(loop(), within)
    return out


async def _quiet(consumer: Consumer | Reader, *, seconds: float = 1.5) -> list[Record]:
    """Whatever arrives within `seconds` (used to show that nothing more comes)."""
    got: list[Record] = []
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        got.extend(await consumer.getmany(timeout_ms=200, max_records=1000))
    return got


async def test_keys_keep_their_partition_and_order(bus: Bus) -> None:
    topic = _topic()
    await bus.ensure_topics([topic])
    await bus.send(_messages(topic, 100))
    consumer = bus.consumer([topic], group_id=f"g-{uuid.uuid4().hex[:6]}")
    await consumer.start()
    try:
        records = await _drain(consumer, 100)
    finally:
        await consumer.stop()
    assert len(records) == 100
    by_key: dict[str, list[int]] = {}
    for r in records:
        assert r.partition == partition_for(r.key, PARTITIONS), "both buses place a key like Kafka does"
        by_key.setdefault(r.key, []).append(int(r.value.decode().split("-")[1]))
    for values in by_key.values():
        assert values == sorted(values), "order holds within a key"
    assert {r.headers["h"] for r in records} == {str(i) for i in range(100)}


async def test_uncommitted_records_are_redelivered_after_a_restart(bus: Bus) -> None:
    topic, group = _topic(), f"g-{uuid.uuid4().hex[:6]}"
    await bus.ensure_topics([topic])
    await bus.send(_messages(topic, 40))
    first = bus.consumer([topic], group_id=group)
    await first.start()
    try:
        records = await _drain(first, 40)
        committed = [r for r in records if r.key in {"key-0", "key-1", "key-2"}]
        # Commit only the partitions that hold these keys, and all of each partition's records.
        parts = {(r.topic, r.partition) for r in committed}
        await first.commit([r for r in records if (r.topic, r.partition) in parts])
    finally:
        await first.stop()
    expected_again = {r.value for r in records if (r.topic, r.partition) not in parts}
    second = bus.consumer([topic], group_id=group)
    await second.start()
    try:
        again = await _drain(second, len(expected_again)) if expected_again else []
        again += await _quiet(second)
    finally:
        await second.stop()
    assert {r.value for r in again} == expected_again
    assert len(again) == len(expected_again)


async def test_committed_records_are_not_redelivered(bus: Bus) -> None:
    topic, group = _topic(), f"g-{uuid.uuid4().hex[:6]}"
    await bus.ensure_topics([topic])
    await bus.send(_messages(topic, 20))
    consumer = bus.consumer([topic], group_id=group)
    await consumer.start()
    try:
        await consumer.commit(await _drain(consumer, 20))
    finally:
        await consumer.stop()
    await bus.send(_messages(topic, 5))
    again = bus.consumer([topic], group_id=group)
    await again.start()
    try:
        rest = await _drain(again, 5)
        rest += await _quiet(again)
    finally:
        await again.stop()
    assert len(rest) == 5


async def test_rewind_goes_back_to_the_committed_offsets(bus: Bus) -> None:
    topic, group = _topic(), f"g-{uuid.uuid4().hex[:6]}"
    await bus.ensure_topics([topic])
    await bus.send(_messages(topic, 12))
    consumer = bus.consumer([topic], group_id=group)
    await consumer.start()
    try:
        records = await _drain(consumer, 12)
        await consumer.rewind()
        again = await _drain(consumer, 12)
    finally:
        await consumer.stop()
    assert sorted(r.value for r in again) == sorted(r.value for r in records)


async def test_group_members_split_the_partitions(bus: Bus) -> None:
    topic, group = _topic(), f"g-{uuid.uuid4().hex[:6]}"
    await bus.ensure_topics([topic])
    a = bus.consumer([topic], group_id=group)
    b = bus.consumer([topic], group_id=group)
    await a.start()
    await b.start()
    try:
        # Let the group settle (Kafka rebalances when the second member joins).
        await _quiet(a, seconds=1.0)
        await _quiet(b, seconds=1.0)
        await bus.send(_messages(topic, 200, keys=50))
        got_a: list[Record] = []
        got_b: list[Record] = []

        async def both() -> None:
            while len(got_a) + len(got_b) < 200:
                got_a.extend(await a.getmany(timeout_ms=100, max_records=1000))
                got_b.extend(await b.getmany(timeout_ms=100, max_records=1000))

        await asyncio.wait_for(both(), 60)
    finally:
        await a.stop()
        await b.stop()
    assert got_a and got_b, "both members got work"
    assert {r.partition for r in got_a}.isdisjoint({r.partition for r in got_b})
    assert sorted(r.value for r in got_a + got_b) == sorted(m.value for m in _messages(topic, 200, keys=50))


# --- readers: no group, chosen offsets, nothing committed ------------------------------------------


def _ends(messages: list[OutMessage]) -> dict[int, int]:
    """Per partition, the end offset after `messages` were sent to a new topic."""
    ends = dict.fromkeys(range(PARTITIONS), 0)
    for m in messages:
        ends[partition_for(m.key, PARTITIONS)] += 1
    return ends


async def test_readers_from_the_end_each_see_every_new_record(bus: Bus) -> None:
    topic = _topic()
    await bus.ensure_topics([topic])
    old = _messages(topic, 20)
    new = [OutMessage(topic=topic, key=m.key, value=b"new-" + m.value) for m in _messages(topic, 30)]
    await bus.send(old)
    readers = [bus.reader([topic]), bus.reader([topic])]
    for reader in readers:
        await reader.start()
    try:
        assert readers[0].positions() == {topic: _ends(old)}
        await bus.send(new)
        got = []
        for reader in readers:
            records = await _drain(reader, len(new))
            records += await _quiet(reader, seconds=1.0)
            got.append(records)
        positions = [reader.positions() for reader in readers]
    finally:
        for reader in readers:
            await reader.stop()
    for records in got:
        assert sorted(r.value for r in records) == sorted(m.value for m in new), "only new, all, once"
        for partition in range(PARTITIONS):
            offsets = [r.offset for r in records if r.partition == partition]
            assert offsets == sorted(offsets), "order holds within a partition"
    assert positions == [{topic: _ends(old + new)}] * 2


async def test_a_reader_resumes_exactly_from_the_given_positions(bus: Bus) -> None:
    given, other = _topic(), _topic()
    await bus.ensure_topics([given, other])
    sent = _messages(given, 40)
    await bus.send(sent + _messages(other, 10))
    ends = _ends(sent)
    # Partition 0 left out (one added since): from its earliest record; the others from their middle.
    start = {p: end // 2 for p, end in ends.items() if p != 0}
    reader = bus.reader([given, other], start={given: start})
    await reader.start()
    try:
        # `other` is not in `start`: from its end, so only what is sent from now on.
        assert reader.positions() == {given: {0: 0, **start}, other: _ends(_messages(other, 10))}
        later = [OutMessage(topic=other, key="late", value=b"late")]
        await bus.send(later)
        expected = {
            (r.partition, r.value) for r in _records_of(sent) if r.offset >= start.get(r.partition, 0)
        }
        records = await _drain(reader, len(expected) + 1)
        records += await _quiet(reader, seconds=1.0)
        positions = reader.positions()
    finally:
        await reader.stop()
    assert {(r.partition, r.value) for r in records if r.topic == given} == expected
    assert [r.value for r in records if r.topic == other] == [b"late"]
    assert len(records) == len(expected) + 1, "nothing twice"
    assert positions[given] == ends


async def test_a_position_past_the_end_reads_from_the_earliest_record(bus: Bus) -> None:
    topic = _topic()
    await bus.ensure_topics([topic])
    sent = _messages(topic, 12)
    await bus.send(sent)
    reader = bus.reader([topic], start={topic: dict.fromkeys(range(PARTITIONS), 10_000)})
    await reader.start()
    try:
        records = await _drain(reader, len(sent))
        records += await _quiet(reader, seconds=1.0)
    finally:
        await reader.stop()
    assert sorted(r.value for r in records) == sorted(m.value for m in sent)


def _records_of(messages: list[OutMessage]) -> list[Record]:
    """The records `messages` become on a new topic (partition and offset as both buses assign them)."""
    out: list[Record] = []
    counts = dict.fromkeys(range(PARTITIONS), 0)
    for m in messages:
        partition = partition_for(m.key, PARTITIONS)
        out.append(
            Record(topic=m.topic, partition=partition, offset=counts[partition], key=m.key, value=m.value)
        )
        counts[partition] += 1
    return out
