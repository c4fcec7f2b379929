"""The consume → process → produce → commit loop, run on the in-memory bus."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import pytest

from shared.bus.base import OutMessage, Record
from shared.bus.memory import MemoryBus, MemoryConsumer
from shared.errors import PoisonMessage, TransientError
from shared.stage import BatchResult, Handler, Stage

IN, OUT, DLQ, GROUP = "in", "out", "dlq", "stage-test"
WAIT_S = 5.0


def _records(bus: MemoryBus, topic: str) -> list[Record]:
    return bus.broker.records(topic)


def _committed(bus: MemoryBus, topic: str = IN) -> int:
    return sum(bus.broker.committed(GROUP, topic, p) for p in range(bus.broker.partitions))


def _echo(record: Record) -> OutMessage:
    return OutMessage(topic=OUT, key=record.key, value=record.value.upper())


async def _fill(bus: MemoryBus, n: int) -> None:
    messages = [
        OutMessage(topic=IN, key=f"key-{i}", value=f"v{i}".encode(), headers={"trace": str(i)})
        for i in range(n)
    ]
    await bus.send(messages)


def _stage(bus: MemoryBus, handler: Handler, *, max_attempts: int = 3) -> Stage:
    return Stage(
        name="test-stage",
        bus=bus,
        consumer=bus.consumer([IN], group_id=GROUP),
        handler=handler,
        dlq_topic=DLQ,
        max_attempts=max_attempts,
        poll_timeout_ms=20,
        max_backoff_s=0.01,
    )


async def _run_until(stage: Stage, done: Callable[[], bool]) -> None:
    """Run the stage until `done()` holds, then stop it; fail instead of hanging."""
    stop = asyncio.Event()
    task = asyncio.create_task(stage.run(stop))

    async def condition() -> None:
        while not done():
            if task.done():
                task.result()  # the stage died: raise its error here
                raise AssertionError("the stage returned before the condition held")
            await asyncio.sleep(0.005)

    try:
        await asyncio.wait_for(condition(), WAIT_S)
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_S)


async def test_every_record_is_produced_and_the_batch_committed() -> None:
    bus = MemoryBus(partitions=4)
    await _fill(bus, 12)

    async def handler(records: Sequence[Record]) -> BatchResult:
        return BatchResult(out=[_echo(r) for r in records])

    stage = _stage(bus, handler)
    await _run_until(stage, lambda: _committed(bus) == 12)
    assert sorted(r.value for r in _records(bus, OUT)) == sorted(f"V{i}".encode() for i in range(12))
    assert _records(bus, DLQ) == []
    assert (stage.stats.records_in, stage.stats.records_out, stage.stats.dead_lettered) == (12, 12, 0)


async def test_a_poison_record_is_dead_lettered_alone_with_why_and_where() -> None:
    bus = MemoryBus(partitions=4)
    await _fill(bus, 10)
    bad = next(r for r in _records(bus, IN) if r.key == "key-3")

    async def handler(records: Sequence[Record]) -> BatchResult:
        for r in records:
            if r.key == "key-3":
                raise PoisonMessage(f"{r.topic}[{r.partition}]@{r.offset}: not a valid MentionIngested")
        return BatchResult(out=[_echo(r) for r in records])

    stage = _stage(bus, handler)
    await _run_until(stage, lambda: _committed(bus) == 10)

    [dead] = _records(bus, DLQ)
    assert (dead.key, dead.value) == (bad.key, bad.value)
    assert dead.headers["trace"] == "3"  # the original headers are kept
    assert dead.headers["mr_error"] == f"in[{bad.partition}]@{bad.offset}: not a valid MentionIngested"
    assert dead.headers["mr_error_type"] == "PoisonMessage"
    assert dead.headers["mr_stage"] == "test-stage"
    assert dead.headers["mr_original_topic"] == IN
    assert dead.headers["mr_original_partition"] == str(bad.partition)
    assert dead.headers["mr_original_offset"] == str(bad.offset)
    assert int(dead.headers["mr_failed_at_ms"]) > 0
    assert sorted(r.key for r in _records(bus, OUT)) == sorted(f"key-{i}" for i in range(10) if i != 3)
    assert stage.stats.dead_lettered == 1


async def test_a_record_the_handler_puts_in_dead_is_dead_lettered_without_retries() -> None:
    bus = MemoryBus(partitions=1)
    await _fill(bus, 3)
    calls: list[int] = []

    async def handler(records: Sequence[Record]) -> BatchResult:
        calls.append(len(records))
        result = BatchResult()
        for r in records:
            if r.key == "key-1":
                result.dead.append((r, PoisonMessage("cannot decode")))
            else:
                result.out.append(_echo(r))
        return result

    await _run_until(_stage(bus, handler), lambda: _committed(bus) == 3)
    assert calls == [3]
    assert [r.headers["mr_error"] for r in _records(bus, DLQ)] == ["cannot decode"]
    assert len(_records(bus, OUT)) == 2


async def test_a_failing_record_is_isolated_and_dead_lettered_after_its_retries() -> None:
    bus = MemoryBus(partitions=1)
    await _fill(bus, 5)
    attempts: list[tuple[str, ...]] = []

    async def handler(records: Sequence[Record]) -> BatchResult:
        attempts.append(tuple(r.key for r in records))
        if any(r.key == "key-2" for r in records):
            raise ValueError("division by zero in the scoring")
        return BatchResult(out=[_echo(r) for r in records])

    await _run_until(_stage(bus, handler, max_attempts=3), lambda: _committed(bus) == 5)

    everything = tuple(f"key-{i}" for i in range(5))
    assert attempts[:3] == [everything] * 3  # the batch, max_attempts times
    assert attempts.count(("key-2",)) == 3  # then the bad record alone, max_attempts times
    assert [k for k in attempts[3:] if k != ("key-2",)] == [(f"key-{i}",) for i in range(5) if i != 2]
    [dead] = _records(bus, DLQ)
    assert dead.key == "key-2"
    assert dead.headers["mr_error"] == "division by zero in the scoring"
    assert dead.headers["mr_error_type"] == "ValueError"
    assert [r.key for r in _records(bus, OUT)] == [k for k in everything if k != "key-2"]


async def test_a_transient_error_is_retried_until_it_succeeds() -> None:
    bus = MemoryBus(partitions=2)
    await _fill(bus, 6)
    failures_left = 4
    calls = 0

    async def handler(records: Sequence[Record]) -> BatchResult:
        nonlocal failures_left, calls
        calls += 1
        if failures_left:
            failures_left -= 1
            raise TransientError("database unavailable")
        return BatchResult(out=[_echo(r) for r in records])

    stage = _stage(bus, handler, max_attempts=2)
    await _run_until(stage, lambda: _committed(bus) == 6)
    assert calls == 5  # never isolated record by record, never dead-lettered
    assert stage.stats.retries == 4
    assert _records(bus, DLQ) == []
    assert sorted(r.value for r in _records(bus, OUT)) == sorted(f"V{i}".encode() for i in range(6))


async def test_an_os_error_counts_as_transient() -> None:
    bus = MemoryBus(partitions=1)
    await _fill(bus, 2)
    failed = False

    async def handler(records: Sequence[Record]) -> BatchResult:
        nonlocal failed
        if not failed:
            failed = True
            raise ConnectionRefusedError("broker down")
        return BatchResult(out=[_echo(r) for r in records])

    await _run_until(_stage(bus, handler), lambda: _committed(bus) == 2)
    assert _records(bus, DLQ) == []
    assert len(_records(bus, OUT)) == 2


async def test_stopping_during_an_outage_leaves_the_batch_for_the_next_consumer() -> None:
    bus = MemoryBus(partitions=4)
    await _fill(bus, 8)
    calls = 0

    async def down(records: Sequence[Record]) -> BatchResult:
        nonlocal calls
        calls += 1
        raise TransientError("database unavailable")

    await _run_until(_stage(bus, down), lambda: calls >= 3)
    assert _committed(bus) == 0
    assert _records(bus, OUT) == []
    assert _records(bus, DLQ) == []

    # A new member of the group gets the whole batch again, and this time it goes through.
    async def up(records: Sequence[Record]) -> BatchResult:
        return BatchResult(out=[_echo(r) for r in records])

    await _run_until(_stage(bus, up), lambda: _committed(bus) == 8)
    assert sorted(r.key for r in _records(bus, OUT)) == sorted(f"key-{i}" for i in range(8))
    assert _records(bus, DLQ) == []


class _FlakyBus(MemoryBus):
    """The in-memory bus whose next `send` calls fail with the given errors (a broker outage)."""

    def __init__(self, *errors: Exception) -> None:
        super().__init__(partitions=1)
        self.errors = list(errors)

    async def send(self, messages: Sequence[OutMessage]) -> None:
        if self.errors and any(m.topic != IN for m in messages):
            raise self.errors.pop(0)
        await super().send(messages)


class _FlakyCommits(MemoryConsumer):
    """An in-memory consumer whose next commits fail with the given errors."""

    def __init__(self, bus: MemoryBus, *errors: Exception) -> None:
        super().__init__(bus.broker, [IN], GROUP)
        self.errors = list(errors)

    async def commit(self, records: Sequence[Record]) -> None:
        if self.errors:
            raise self.errors.pop(0)
        await super().commit(records)


async def _echo_all(records: Sequence[Record]) -> BatchResult:
    return BatchResult(out=[_echo(r) for r in records])


def _stage_on(bus: MemoryBus, consumer: MemoryConsumer) -> Stage:
    return Stage(
        name="test-stage",
        bus=bus,
        consumer=consumer,
        handler=_echo_all,
        dlq_topic=DLQ,
        poll_timeout_ms=20,
        max_backoff_s=0.01,
    )


async def test_a_transient_send_failure_retries_the_batch() -> None:
    bus = _FlakyBus(TransientError("produce timed out"), TimeoutError("no ack"))
    await _fill(bus, 3)
    stage = _stage_on(bus, bus.consumer([IN], group_id=GROUP))
    await _run_until(stage, lambda: _committed(bus) == 3)
    assert stage.stats.retries == 2
    assert sorted(r.key for r in _records(bus, OUT)) == ["key-0", "key-1", "key-2"]
    assert _records(bus, DLQ) == []


async def test_a_transient_commit_failure_retries_the_batch_at_least_once() -> None:
    bus = MemoryBus(partitions=1)
    await _fill(bus, 3)
    stage = _stage_on(bus, _FlakyCommits(bus, TransientError("coordinator not available")))
    await _run_until(stage, lambda: _committed(bus) == 3)
    assert stage.stats.retries == 1
    # The outputs were produced before the failed commit and again on the retry: duplicates, no loss.
    assert sorted(r.key for r in _records(bus, OUT)) == ["key-0", "key-0", "key-1", "key-1", "key-2", "key-2"]
    assert _records(bus, DLQ) == []


async def test_a_non_transient_failure_outside_the_handler_stops_the_stage() -> None:
    bus = _FlakyBus(RuntimeError("serializer bug"))
    await _fill(bus, 1)
    stage = _stage_on(bus, bus.consumer([IN], group_id=GROUP))
    with pytest.raises(RuntimeError, match="serializer bug"):
        await asyncio.wait_for(stage.run(asyncio.Event()), WAIT_S)
    assert _committed(bus) == 0
    # The consumer left the group on the way out, so a new member takes the uncommitted record over.
    successor = bus.consumer([IN], group_id=GROUP)
    await successor.start()
    assert [r.key for r in await successor.getmany(timeout_ms=100, max_records=10)] == ["key-0"]
    await successor.stop()
