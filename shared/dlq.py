"""The dead-letter topic for operators: `mention-router dlq list` and `mention-router dlq replay`.

`list` shows each entry of `mentions.dlq` with where it came from and why it failed (the `mr_*` headers a
stage adds). `replay` publishes the original message again — the original value, key and CloudEvents
headers, without the `mr_*` ones — to the topic it came from, once the cause is fixed. A dead letter whose
value was truncated (over 256 KiB) is replayed from the original topic, while that still holds it.
Replaying is safe to repeat: every consumer is idempotent on the mention id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from shared.bus.base import OutMessage
from shared.bus.kafka import KafkaBus
from shared.errors import ConfigError
from shared.kafkaauth import client_options
from shared.settings import Settings

MR_HEADER_PREFIX = "mr_"


@dataclass(frozen=True)
class DeadLetter:
    """One entry of the dead-letter topic."""

    partition: int
    offset: int
    key: str
    value: bytes
    headers: tuple[tuple[str, bytes], ...]

    def header(self, name: str) -> str:
        for k, v in self.headers:
            if k == name:
                return v.decode("utf-8", "replace")
        return ""

    @property
    def entry(self) -> str:
        """`PARTITION:OFFSET`, the entry's address in the dead-letter topic (what `replay --offset` takes)."""
        return f"{self.partition}:{self.offset}"

    @property
    def stage(self) -> str:
        return self.header("mr_stage")

    @property
    def error_type(self) -> str:
        return self.header("mr_error_type")

    @property
    def error(self) -> str:
        return self.header("mr_error")

    @property
    def original_topic(self) -> str:
        return self.header("mr_original_topic")

    @property
    def original_partition(self) -> int | None:
        return _int(self.header("mr_original_partition"))

    @property
    def original_offset(self) -> int | None:
        return _int(self.header("mr_original_offset"))

    @property
    def failed_at(self) -> datetime | None:
        ms = _int(self.header("mr_failed_at_ms"))
        return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)

    @property
    def truncated(self) -> bool:
        return self.header("mr_value_truncated") == "true"

    @property
    def value_bytes(self) -> int:
        """The size of the original value (the dead letter holds only the start of a truncated one)."""
        return _int(self.header("mr_value_bytes")) or len(self.value)

    def replay_headers(self) -> dict[str, str]:
        """The original headers (CloudEvents and the rest), without what the dead-lettering added."""
        return {
            k: v.decode("utf-8", "replace") for k, v in self.headers if not k.startswith(MR_HEADER_PREFIX)
        }

    def summary(self) -> dict[str, Any]:
        failed_at = self.failed_at
        return {
            "entry": self.entry,
            "partition": self.partition,
            "offset": self.offset,
            "key": self.key,
            "stage": self.stage,
            "error_type": self.error_type,
            "error": self.error,
            "failed_at": failed_at.isoformat() if failed_at else None,
            "original_topic": self.original_topic,
            "original_partition": self.original_partition,
            "original_offset": self.original_offset,
            "value_bytes": self.value_bytes,
            "truncated": self.truncated,
        }


def _int(text: str) -> int | None:
    return int(text) if text.lstrip("-").isdigit() else None


async def _partitions(settings: Settings, topic: str) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=f"{settings.kafka_client_id}.dlq",
        **client_options(settings),
    )
    await admin.start()
    try:
        if topic not in set(await admin.list_topics()):
            return []
        described: list[Any] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"])


def _consumer(settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=f"{settings.kafka_client_id}.dlq",
        group_id=None,
        enable_auto_commit=False,
        # Replaying what a transaction aborted would publish what the pipeline never published.
        isolation_level="read_committed",
        **client_options(settings),
    )


async def read_dead_letters(settings: Settings, *, timeout_s: float = 30.0) -> list[DeadLetter]:
    """Every entry of the dead-letter topic, oldest failure first (none if the topic does not exist)."""
    tps = await _partitions(settings, settings.topic_dlq)
    if not tps:
        return []
    consumer = _consumer(settings)
    await consumer.start()
    letters: list[DeadLetter] = []
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if end[tp] > await consumer.position(tp)}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while remaining:
            if loop.time() > deadline:
                raise TimeoutError(f"could not read {settings.topic_dlq} to its end in {timeout_s:.0f}s")
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                for r in records:
                    if r.offset < end[tp]:
                        letters.append(
                            DeadLetter(
                                partition=r.partition,
                                offset=r.offset,
                                key=r.key.decode("utf-8", "replace") if r.key is not None else "",
                                value=r.value if r.value is not None else b"",
                                headers=tuple(r.headers or ()),
                            )
                        )
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    epoch = datetime.fromtimestamp(0, UTC)
    return sorted(letters, key=lambda d: (d.failed_at or epoch, d.partition, d.offset))


def select(
    letters: Sequence[DeadLetter],
    *,
    entries: Sequence[str] = (),
    stage: str | None = None,
    error_type: str | None = None,
) -> list[DeadLetter]:
    """The letters at `entries` (each `PARTITION:OFFSET`, or `OFFSET` where only one partition has it),
    or all of them when none is given; filtered by stage and error type."""
    chosen = list(letters)
    if entries:
        chosen = []
        for entry in entries:
            partition, _, offset = entry.rpartition(":")
            if not offset.isdigit() or (partition and not partition.isdigit()):
                raise ConfigError(f"--offset {entry!r}: expected PARTITION:OFFSET or OFFSET")
            found = [
                d
                for d in letters
                if d.offset == int(offset) and (not partition or d.partition == int(partition))
            ]
            if not found:
                raise ConfigError(f"--offset {entry}: no such entry in the dead-letter topic")
            if len(found) > 1:
                where = ", ".join(d.entry for d in found)
                raise ConfigError(f"--offset {entry} is ambiguous ({where}); give PARTITION:OFFSET")
            chosen.extend(found)
    if stage:
        chosen = [d for d in chosen if d.stage == stage]
    if error_type:
        chosen = [d for d in chosen if d.error_type == error_type]
    return chosen


async def _original_value(settings: Settings, letter: DeadLetter) -> bytes:
    """The whole value of a truncated dead letter, read back from its original topic."""
    partition, offset = letter.original_partition, letter.original_offset
    if not letter.original_topic or partition is None or offset is None:
        raise ConfigError(f"{letter.entry}: truncated, and its original topic/partition/offset are unknown")
    tp = TopicPartition(letter.original_topic, partition)
    consumer = _consumer(settings)
    await consumer.start()
    try:
        consumer.assign([tp])
        first = (await consumer.beginning_offsets([tp]))[tp]
        if offset < first:
            raise ConfigError(
                f"{letter.entry}: truncated, and {tp.topic}[{partition}]@{offset} is no longer retained "
                f"(the partition starts at {first})"
            )
        consumer.seek(tp, offset)
        record = await asyncio.wait_for(consumer.getone(tp), 30)
    finally:
        await consumer.stop()
    if record.offset != offset or record.value is None:
        raise ConfigError(f"{letter.entry}: {tp.topic}[{partition}]@{offset} could not be read back")
    return bytes(record.value)


async def replay(settings: Settings, letters: Sequence[DeadLetter], *, dry_run: bool = False) -> int:
    """Publish each letter's original message to its original topic; how many were published."""
    messages: list[OutMessage] = []
    for letter in letters:
        if not letter.original_topic:
            raise ConfigError(f"{letter.entry}: no mr_original_topic header; cannot tell where it goes")
        value = await _original_value(settings, letter) if letter.truncated else letter.value
        messages.append(
            OutMessage(
                topic=letter.original_topic, key=letter.key, value=value, headers=letter.replay_headers()
            )
        )
    if dry_run or not messages:
        return 0
    bus = KafkaBus(settings)
    await bus.start()
    try:
        await bus.send(messages)  # returns once the broker acknowledged every one (acks=all)
    finally:
        await bus.stop()
    return len(messages)
