"""The bus port: what every service needs from Kafka, and what the in-memory twin reproduces."""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


class CommitFailed(Exception):
    """The group rebalanced before the commit: the batch will be delivered again (at-least-once)."""


@dataclass(frozen=True, slots=True)
class Record:
    """A message as a consumer receives it."""

    topic: str
    partition: int
    offset: int
    key: str
    value: bytes
    headers: dict[str, str] = field(default_factory=dict)
    timestamp_ms: int = 0


@dataclass(frozen=True, slots=True)
class OutMessage:
    """A message to produce."""

    topic: str
    key: str
    value: bytes
    headers: dict[str, str] = field(default_factory=dict)


class Consumer(Protocol):
    """A consumer-group member that yields batches and commits explicitly."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def getmany(self, *, timeout_ms: int, max_records: int) -> list[Record]:
        """The next batch from the assigned partitions (possibly empty after the timeout)."""
        ...

    async def commit(self, records: Sequence[Record]) -> None:
        """Commit, per partition, the offset after the highest of `records`."""
        ...

    async def rewind(self) -> None:
        """Go back to the committed offsets, so that an uncommitted batch is delivered again."""
        ...


class Reader(Protocol):
    """Reads topics from chosen offsets outside any consumer group: every reader sees every record and
    nothing is committed (the API's live stream). Made by `Bus.reader`."""

    async def start(self) -> None:
        """Assign the partitions and fix the starting offsets: a record sent after this returns is read."""
        ...

    async def stop(self) -> None: ...

    async def getmany(self, *, timeout_ms: int, max_records: int) -> list[Record]:
        """The next records, in order within each partition (possibly none after the timeout)."""
        ...

    def positions(self) -> dict[str, dict[int, int]]:
        """Per topic and partition, the offset after the last record returned (where to resume)."""
        ...


class Bus(Protocol):
    """Produce messages and create consumers; `send` returns once every message is acknowledged."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def ensure_topics(self, topics: Sequence[str]) -> None: ...

    async def check(self) -> None:
        """Raise when the broker cannot be reached now (readiness probes)."""
        ...

    async def verify_access(self, service: str) -> None:
        """Raise (a ConfigError) when the broker does not let this process do what `service` does:
        checked at start, so that a missing ACL stops a service naming the topic and the operation."""
        ...

    async def send(self, messages: Sequence[OutMessage]) -> None: ...

    async def send_in_transaction(
        self, messages: Sequence[OutMessage], records: Sequence[Record], *, consumer: Consumer, group_id: str
    ) -> None:
        """Publish `messages` and commit `consumer`'s offsets after `records` atomically: both or neither."""
        ...

    def consumer(self, topics: Sequence[str], *, group_id: str) -> Consumer: ...

    def reader(
        self, topics: Sequence[str], *, start: Mapping[str, Mapping[int, int]] | None = None
    ) -> Reader:
        """A group-less reader of `topics`. `start` gives per topic the offset to read next in each
        partition; a topic it leaves out is read from its end (only new records), a partition it leaves
        out (one added since) from its earliest record, and an offset the broker no longer holds (deleted
        by retention) or past the end from the earliest record it holds. Partitions added while it reads
        are picked up (Kafka: within 30 s) and read from their earliest record."""
        ...


_WORDS: dict[int, struct.Struct] = {}


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (Java client `Utils.murmur2`) as an unsigned 32-bit value. The key's 4-byte words
    are read in one `struct` call: 2.5x cheaper than aiokafka's byte-by-byte version (2.4 against 6 µs
    for a 36-byte key), which a producer pays on every message."""
    length = len(data)
    m = 0x5BD1E995
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    words = length >> 2
    unpack = _WORDS.get(words)
    if unpack is None:
        unpack = _WORDS[words] = struct.Struct(f"<{words}I")
    for k in unpack.unpack_from(data):
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        h = ((h * m) & 0xFFFFFFFF) ^ ((k * m) & 0xFFFFFFFF)
    extra = length & 3
    if extra:
        index = length & ~3
        if extra >= 3:
            h ^= data[index + 2] << 16
        if extra >= 2:
            h ^= data[index + 1] << 8
        h ^= data[index]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def partition_for(key: str, partitions: int) -> int:
    """Kafka's default partitioner (murmur2 of the key bytes), so both buses place keys alike."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions
