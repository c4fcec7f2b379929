"""The stage with exactly-once on (a transactional group): outputs and offsets through the bus's
`send_in_transaction`, on the in-memory twin (the Kafka side: test_classifier_exactly_once.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from shared.bus.base import OutMessage, Record
from shared.bus.memory import MemoryBus
from shared.stage import BatchResult, Stage

IN, OUT, DLQ, GROUP = "in", "out", "dlq", "txn-test"


async def test_a_transactional_stage_publishes_and_commits_each_batch() -> None:
    bus = MemoryBus()
    await bus.send([OutMessage(topic=IN, key=f"k{i}", value=b"v") for i in range(25)])

    async def handler(records: Sequence[Record]) -> BatchResult:
        return BatchResult(out=[OutMessage(topic=OUT, key=r.key, value=b"out") for r in records])

    stage = Stage(
        name="txn",
        bus=bus,
        consumer=bus.consumer([IN], group_id=GROUP),
        handler=handler,
        dlq_topic=DLQ,
        max_records=10,
        poll_timeout_ms=20,
        transactional_group=GROUP,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(stage.run(stop))
    for _ in range(200):
        if bus.broker.lag(GROUP, IN) == 0 and len(bus.broker.records(OUT)) == 25:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert sorted(r.key for r in bus.broker.records(OUT)) == sorted(f"k{i}" for i in range(25))
    assert bus.broker.lag(GROUP, IN) == 0
    assert stage.stats.batches >= 3
