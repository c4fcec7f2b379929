"""The stage's size limits: a record too big to pass on is dead-lettered unhandled, and a dead letter
always fits the dead-letter topic (its value truncated, the original size in a header)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from shared.bus.base import OutMessage, Record
from shared.bus.memory import MemoryBus
from shared.stage import MAX_DEAD_LETTER_VALUE_BYTES, BatchResult, Stage, dead_letter

IN, OUT, DLQ, GROUP = "in", "out", "dlq", "limits-test"


async def test_a_record_over_the_limit_is_dead_lettered_without_being_handled() -> None:
    bus = MemoryBus(partitions=2)
    big = b"x" * 2_000
    await bus.send(
        [OutMessage(topic=IN, key=f"key-{i}", value=big if i == 3 else b"small") for i in range(6)]
    )
    seen: list[str] = []

    async def handler(records: Sequence[Record]) -> BatchResult:
        seen.extend(r.key for r in records)
        return BatchResult(out=[OutMessage(topic=OUT, key=r.key, value=r.value) for r in records])

    stage = Stage(
        name="limits",
        bus=bus,
        consumer=bus.consumer([IN], group_id=GROUP),
        handler=handler,
        dlq_topic=DLQ,
        poll_timeout_ms=20,
        max_record_bytes=1_000,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(stage.run(stop))

    async def done() -> None:
        while sum(bus.broker.committed(GROUP, IN, p) for p in range(2)) < 6:
            if task.done():
                task.result()
                raise AssertionError("the stage returned before committing everything")
            await asyncio.sleep(0.005)

    try:
        await asyncio.wait_for(done(), 5)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    assert "key-3" not in seen and len(seen) == 5
    [dead] = bus.broker.records(DLQ)
    assert dead.key == "key-3" and dead.value == big  # under the dead letter's own cap: kept whole
    assert dead.headers["mr_error_type"] == "PayloadTooLarge"
    assert "2,000 bytes, over the 1,000-byte limit" in dead.headers["mr_error"]
    assert "mr_value_truncated" not in dead.headers
    assert sorted(r.key for r in bus.broker.records(OUT)) == [f"key-{i}" for i in range(6) if i != 3]


def test_a_dead_letter_keeps_at_most_the_cap_of_the_value() -> None:
    value = b"y" * (MAX_DEAD_LETTER_VALUE_BYTES * 8)
    record = Record(topic=IN, partition=1, offset=7, key="k", value=value, headers={"ce_id": "k:x"})
    out = dead_letter(record, ValueError("too big"), stage="s", dlq_topic=DLQ)
    assert out.value == value[:MAX_DEAD_LETTER_VALUE_BYTES]
    assert out.headers["mr_value_truncated"] == "true"
    assert out.headers["mr_value_bytes"] == str(len(value))
    assert out.headers["ce_id"] == "k:x"
    assert (out.headers["mr_original_partition"], out.headers["mr_original_offset"]) == ("1", "7")
