"""The in-memory bus: Kafka's semantics (partitions, consumer groups, committed offsets) in one process.

Used by the embedded default and by fast tests. What it keeps from Kafka:
- a key always lands in the same partition, and order holds within a partition;
- the members of a consumer group split the partitions, and a join or leave rebalances them;
- a member starts each assigned partition at the group's committed offset, so anything consumed
  but not committed is delivered again after a restart or a rebalance.
It keeps every message in memory for the life of the process (no retention).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from shared.bus.base import CommitFailed, Consumer, OutMessage, Record, partition_for

_member_ids = itertools.count()


@dataclass
class _Group:
    members: list[MemoryConsumer] = field(default_factory=list)
    committed: dict[tuple[str, int], int] = field(default_factory=dict)


class MemoryBroker:
    """The shared state of one in-memory cluster."""

    def __init__(self, *, partitions: int = 4) -> None:
        self.partitions = partitions
        self._topics: dict[str, list[list[Record]]] = {}
        self._groups: dict[str, _Group] = {}
        self._changed = asyncio.Event()

    def create_topic(self, topic: str) -> None:
        if topic not in self._topics:
            self._topics[topic] = [[] for _ in range(self.partitions)]
            for group in self._groups.values():
                if any(topic in m.topics for m in group.members):
                    self._rebalance(group)

    def append(self, message: OutMessage) -> Record:
        self.create_topic(message.topic)
        partition = partition_for(message.key, self.partitions)
        log = self._topics[message.topic][partition]
        record = Record(
            topic=message.topic,
            partition=partition,
            offset=len(log),
            key=message.key,
            value=message.value,
            headers=dict(message.headers),
            timestamp_ms=int(time.time() * 1000),
        )
        log.append(record)
        return record

    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for_change(self, seconds: float) -> None:
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), seconds)

    def read(self, topic: str, partition: int, offset: int, limit: int) -> list[Record]:
        return self._topics[topic][partition][offset : offset + limit]

    def end_offsets(self, topic: str) -> list[int]:
        return [len(p) for p in self._topics.get(topic, [])]

    def records(self, topic: str) -> list[Record]:
        """Every record of a topic, partition by partition (for tests and tools)."""
        return [r for p in self._topics.get(topic, []) for r in p]

    def lag(self, group_id: str, topic: str) -> int:
        """Records of `topic` the group has not committed yet."""
        ends = self.end_offsets(topic)
        return sum(end - self.committed(group_id, topic, p) for p, end in enumerate(ends))

    def committed(self, group_id: str, topic: str, partition: int) -> int:
        return self._groups.get(group_id, _Group()).committed.get((topic, partition), 0)

    def join(self, group_id: str, member: MemoryConsumer) -> None:
        group = self._groups.setdefault(group_id, _Group())
        for topic in member.topics:
            self.create_topic(topic)
        group.members.append(member)
        self._rebalance(group)

    def leave(self, group_id: str, member: MemoryConsumer) -> None:
        group = self._groups.get(group_id)
        if group is not None and member in group.members:
            group.members.remove(member)
            self._rebalance(group)

    def commit(self, group_id: str, offsets: dict[tuple[str, int], int]) -> None:
        self._groups.setdefault(group_id, _Group()).committed.update(offsets)

    def _rebalance(self, group: _Group) -> None:
        # Like Kafka's eager rebalance: every member gives up its partitions and resumes the ones it
        # gets from the committed offsets.
        members = sorted(group.members, key=lambda m: m.member_id)
        for member in members:
            member.assign([], group.committed)
        if not members:
            return
        topics = sorted({t for m in members for t in m.topics})
        parts = [(t, p) for t in topics for p in range(len(self._topics[t]))]
        for i, tp in enumerate(parts):
            candidates = [m for m in members if tp[0] in m.topics]
            owner = candidates[i % len(candidates)]
            owner.assignment.append(tp)
        for member in members:
            member.assign(member.assignment, group.committed)
        self.notify()


class MemoryConsumer:
    def __init__(self, broker: MemoryBroker, topics: Sequence[str], group_id: str) -> None:
        self.broker = broker
        self.topics = list(topics)
        self.group_id = group_id
        self.member_id = next(_member_ids)
        self.assignment: list[tuple[str, int]] = []
        self._positions: dict[tuple[str, int], int] = {}
        self._started = False

    def assign(self, partitions: list[tuple[str, int]], committed: dict[tuple[str, int], int]) -> None:
        self.assignment = list(partitions)
        self._positions = {tp: committed.get(tp, 0) for tp in partitions}

    async def start(self) -> None:
        if not self._started:
            self._started = True
            self.broker.join(self.group_id, self)

    async def stop(self) -> None:
        if self._started:
            self._started = False
            self.broker.leave(self.group_id, self)

    def _poll(self, max_records: int) -> list[Record]:
        out: list[Record] = []
        for tp in self.assignment:
            if len(out) >= max_records:
                break
            records = self.broker.read(tp[0], tp[1], self._positions[tp], max_records - len(out))
            if records:
                self._positions[tp] = records[-1].offset + 1
                out.extend(records)
        return out

    async def getmany(self, *, timeout_ms: int, max_records: int) -> list[Record]:
        if not self._started:
            raise RuntimeError("consumer is not started")
        return await _poll_until(self.broker, lambda: self._poll(max_records), timeout_ms)

    async def commit(self, records: Sequence[Record]) -> None:
        offsets: dict[tuple[str, int], int] = {}
        for r in records:
            tp = (r.topic, r.partition)
            if tp not in self._positions:
                # Kafka refuses commits for partitions the member no longer owns.
                raise CommitFailed(f"partition {tp} was revoked before the commit")
            offsets[tp] = max(offsets.get(tp, 0), r.offset + 1)
        self.broker.commit(self.group_id, offsets)

    async def rewind(self) -> None:
        for tp in self.assignment:
            self._positions[tp] = self.broker.committed(self.group_id, *tp)


class MemoryReader:
    """Reads topics from chosen offsets, outside any group (see `Bus.reader`)."""

    def __init__(
        self, broker: MemoryBroker, topics: Sequence[str], start: Mapping[str, Mapping[int, int]] | None
    ) -> None:
        self.broker = broker
        self.topics = list(dict.fromkeys(topics))
        self._start = start or {}
        self._positions: dict[str, dict[int, int]] = {}
        self._turn = 0
        self._started = False

    async def start(self) -> None:
        for topic in self.topics:
            ends = self.broker.end_offsets(topic)
            given = self._start.get(topic)
            self._positions[topic] = (
                dict(enumerate(ends)) if given is None else {p: given.get(p, 0) for p in range(len(ends))}
            )
        self._started = True

    async def stop(self) -> None:
        self._started = False

    def positions(self) -> dict[str, dict[int, int]]:
        return {topic: dict(parts) for topic, parts in self._positions.items()}

    def _poll(self, max_records: int) -> list[Record]:
        parts: list[tuple[str, int, int]] = []
        for topic in self.topics:
            positions = self._positions[topic]
            for partition, end in enumerate(self.broker.end_offsets(topic)):
                # A partition that appeared since (the topic was created) is read from its start; an
                # offset past the end from the earliest record, as Kafka resets an out-of-range offset.
                position = positions.setdefault(partition, 0)
                if position > end:
                    position = positions[partition] = 0
                parts.append((topic, partition, position))
        # Start with another partition each time, so that a busy one does not starve the rest.
        self._turn = (self._turn + 1) % max(1, len(parts))
        out: list[Record] = []
        for topic, partition, position in parts[self._turn :] + parts[: self._turn]:
            if len(out) >= max_records:
                break
            records = self.broker.read(topic, partition, position, max_records - len(out))
            if records:
                self._positions[topic][partition] = records[-1].offset + 1
                out.extend(records)
        return out

    async def getmany(self, *, timeout_ms: int, max_records: int) -> list[Record]:
        if not self._started:
            raise RuntimeError("reader is not started")
        return await _poll_until(self.broker, lambda: self._poll(max_records), timeout_ms)


class MemoryBus:
    def __init__(self, broker: MemoryBroker | None = None, *, partitions: int = 4) -> None:
        self.broker = broker or MemoryBroker(partitions=partitions)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        for topic in topics:
            self.broker.create_topic(topic)

    async def check(self) -> None:
        return None  # in the process: always there

    async def verify_access(self, service: str) -> None:
        return None  # in the process: no principals

    async def send(self, messages: Sequence[OutMessage]) -> None:
        for message in messages:
            self.broker.append(message)
        if messages:
            self.broker.notify()

    async def send_in_transaction(
        self, messages: Sequence[OutMessage], records: Sequence[Record], *, consumer: Consumer, group_id: str
    ) -> None:
        # One process, no await between the two that could be interrupted by another writer: atomic.
        await self.send(messages)
        await consumer.commit(records)

    def consumer(self, topics: Sequence[str], *, group_id: str) -> MemoryConsumer:
        return MemoryConsumer(self.broker, topics, group_id)

    def reader(
        self, topics: Sequence[str], *, start: Mapping[str, Mapping[int, int]] | None = None
    ) -> MemoryReader:
        return MemoryReader(self.broker, topics, start)


async def _poll_until(
    broker: MemoryBroker, poll: Callable[[], list[Record]], timeout_ms: int
) -> list[Record]:
    """`poll()` until it returns records or `timeout_ms` passes, sleeping while the broker is unchanged."""
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        records = poll()
        remaining = deadline - time.monotonic()
        if records or remaining <= 0:
            return records
        await broker.wait_for_change(remaining)
