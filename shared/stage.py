"""The consume → process → produce → commit loop that the classifier and the router share.

Delivery: a batch's outputs are produced and acknowledged (and, for the router, written to the
database inside the handler) before its offsets are committed, so a crash redelivers the batch
(at-least-once); the idempotent mention id absorbs the duplicates.

Failures:
- a transient failure (database or broker unavailable) pauses the stage: it rewinds to the committed
  offsets and retries the batch with capped exponential backoff, for as long as it takes;
- a record the handler rejects (a PoisonMessage, or any non-transient error once the batch is retried
  record by record) goes to the dead-letter topic with the error in its headers, and the stage moves on;
- a record bigger than `max_record_bytes` goes there without being handled (PayloadTooLarge): its output
  could not be published, and retrying it would stall its partition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from shared import metrics
from shared.bus.base import Bus, CommitFailed, Consumer, OutMessage, Record
from shared.errors import PayloadTooLarge, PoisonMessage, is_transient

log = logging.getLogger(__name__)

# The largest record a stage takes in. A broker at its defaults refuses messages over 1 MiB
# (message.max.bytes), so the output of a bigger record could never be published; the margin leaves room
# for what a stage adds (labels, evidence, routing).
MAX_RECORD_BYTES = 1_000_000
# A dead letter keeps at most this much of the original value, so that it always fits the dead-letter
# topic; the whole value stays on the original topic, where `mention-router dlq replay` reads it from.
MAX_DEAD_LETTER_VALUE_BYTES = 256 * 1024


@dataclass
class BatchResult:
    out: list[OutMessage] = field(default_factory=list)
    dead: list[tuple[Record, BaseException]] = field(default_factory=list)


Handler = Callable[[Sequence[Record]], Awaitable[BatchResult]]


def dead_letter(record: Record, error: BaseException, *, stage: str, dlq_topic: str) -> OutMessage:
    """The original message, unchanged (truncated if very large), with why it failed in `mr_*` headers."""
    headers = dict(record.headers)
    value = record.value
    if len(value) > MAX_DEAD_LETTER_VALUE_BYTES:
        value = value[:MAX_DEAD_LETTER_VALUE_BYTES]
        headers.update({"mr_value_truncated": "true", "mr_value_bytes": str(len(record.value))})
    headers.update(
        {
            "mr_error": str(error)[:2000] or type(error).__name__,
            "mr_error_type": type(error).__name__,
            "mr_stage": stage,
            "mr_original_topic": record.topic,
            "mr_original_partition": str(record.partition),
            "mr_original_offset": str(record.offset),
            "mr_failed_at_ms": str(int(time.time() * 1000)),
        }
    )
    return OutMessage(topic=dlq_topic, key=record.key, value=value, headers=headers)


@dataclass
class StageStats:
    batches: int = 0
    records_in: int = 0
    records_out: int = 0
    dead_lettered: int = 0
    retries: int = 0


class Stage:
    """Runs one handler over one consumer until `stop` is set."""

    def __init__(
        self,
        *,
        name: str,
        bus: Bus,
        consumer: Consumer,
        handler: Handler,
        dlq_topic: str,
        max_records: int = 500,
        max_attempts: int = 3,
        poll_timeout_ms: int = 200,
        max_backoff_s: float = 5.0,
        transactional_group: str | None = None,
        max_record_bytes: int = MAX_RECORD_BYTES,
    ) -> None:
        self.name = name
        self.stats = StageStats()
        self._bus = bus
        self._consumer = consumer
        self.consumer = consumer
        self._handler = handler
        self._dlq_topic = dlq_topic
        self._max_records = max_records
        self._max_attempts = max_attempts
        self._poll_timeout_ms = poll_timeout_ms
        self._max_backoff_s = max_backoff_s
        # Set: outputs and offsets go in one Kafka transaction (exactly-once), committed as this group.
        self._transactional_group = transactional_group
        self._max_record_bytes = max_record_bytes
        metrics.initialise([name])

    async def run(self, stop: asyncio.Event) -> None:
        await self._consumer.start()
        try:
            while not stop.is_set():
                records = await self._consumer.getmany(
                    timeout_ms=self._poll_timeout_ms, max_records=self._max_records
                )
                await metrics.observe_lag(self.name, self._consumer)
                if records:
                    await self._process(records, stop)
        finally:
            await self._consumer.stop()

    async def _process(self, records: list[Record], stop: asyncio.Event) -> None:
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                result = await self._handle_fitting(records)
                messages = result.out + [
                    dead_letter(r, e, stage=self.name, dlq_topic=self._dlq_topic) for r, e in result.dead
                ]
                if self._transactional_group is not None:
                    await self._bus.send_in_transaction(
                        messages, records, consumer=self._consumer, group_id=self._transactional_group
                    )
                else:
                    await self._bus.send(messages)
                    await self._consumer.commit(records)
            except CommitFailed as exc:
                # The partitions moved to another member, which will process them again.
                metrics.count_error(self.name, "commit_failed")
                log.warning(
                    "%s: commit refused after a rebalance (%s); the batch will be redelivered", self.name, exc
                )
                return
            except Exception as exc:
                if not is_transient(exc):
                    raise
                attempt += 1
                self.stats.retries += 1
                metrics.count_error(self.name, "transient")
                delay = min(self._max_backoff_s, 0.2 * 2 ** min(attempt, 10))
                log.warning(
                    "%s: batch of %d failed (%s: %s); retrying in %.1fs (attempt %d)",
                    self.name,
                    len(records),
                    type(exc).__name__,
                    exc,
                    delay,
                    attempt,
                )
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                except TimeoutError:
                    continue
                # Stopping: leave the batch uncommitted so that it is delivered again.
                await self._consumer.rewind()
                return
            else:
                self.stats.batches += 1
                self.stats.records_in += len(records)
                self.stats.records_out += len(result.out)
                self.stats.dead_lettered += len(result.dead)
                metrics.observe_batch(
                    self.name,
                    seconds=time.monotonic() - started,
                    records=len(records),
                    out=len(result.out),
                    dead=len(result.dead),
                )
                for record, error in result.dead:
                    log.error(
                        "%s: dead-lettered %s[%d]@%d key=%s: %s",
                        self.name,
                        record.topic,
                        record.partition,
                        record.offset,
                        record.key,
                        error,
                    )
                return

    async def _handle_fitting(self, records: list[Record]) -> BatchResult:
        """The handler over the records of an acceptable size; the others dead-lettered unhandled."""
        limit = self._max_record_bytes
        fitting = [r for r in records if len(r.value) <= limit]
        if len(fitting) == len(records):
            return await self._handle(records)
        result = await self._handle(fitting) if fitting else BatchResult()
        for r in records:
            if len(r.value) > limit:
                error = PayloadTooLarge(
                    f"{r.topic}[{r.partition}]@{r.offset}: the value is {len(r.value):,} bytes, over the "
                    f"{limit:,}-byte limit of a message this stage takes in"
                )
                result.dead.append((r, error))
        return result

    async def _handle(self, records: list[Record]) -> BatchResult:
        """The handler over the batch; after repeated non-transient failures, record by record."""
        last: BaseException | None = None
        for _ in range(self._max_attempts):
            try:
                return await self._handler(records)
            except Exception as exc:
                if is_transient(exc):
                    raise
                last = exc
                if isinstance(exc, PoisonMessage):
                    break  # it will never succeed; no point in trying again
        if len(records) == 1:
            assert last is not None
            return BatchResult(dead=[(records[0], last)])
        log.warning(
            "%s: batch of %d keeps failing (%s); isolating the bad record(s)", self.name, len(records), last
        )
        merged = BatchResult()
        for record in records:
            single = await self._handle([record])
            merged.out.extend(single.out)
            merged.dead.extend(single.dead)
        return merged
