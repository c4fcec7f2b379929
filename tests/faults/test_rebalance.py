"""Rebalance mid-stream: a third router replica joins, then one of the first two leaves.

The classifier and two routers run as separate processes; 5,000 mentions are published at 400 a second.
Once 30 % are published a third router starts (the group rebalances to three members); at 60 % the first
router gets SIGTERM and leaves (the group rebalances to two); the stream waits for each rebalance.
Batches whose partitions moved are delivered again to the new owner; the mention id absorbs that.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench.infra import group_members
from devsupport.scenario import wait_for
from tests.conftest import KafkaEnv
from tests.faults.harness import FaultPipeline, expected_departments, generated

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.postgres, pytest.mark.e2e]

N = 5_000
RATE = 400.0


@pytest.mark.timeout(150)
async def test_router_replica_joins_and_one_leaves(kafka: KafkaEnv, pg_url: str, tmp_path: Path) -> None:
    pipe = FaultPipeline(bootstrap=kafka.bootstrap, database_url=pg_url, prefix=kafka.prefix, logs=tmp_path)
    await pipe.create_topics()
    messages, mentions = generated(N, settings=pipe.settings, run_id=kafka.prefix)
    expected = expected_departments(mentions, pipe.settings)
    group = pipe.settings.group("router")
    notes: dict[str, int | None] = {}

    async def routers(n: int) -> bool:
        pipe.procs.check_alive()
        state, count = await group_members(kafka.bootstrap, group)
        return state == "Stable" and count == n

    async def membership_changes(sent: int) -> None:
        # Called by the sender every 100 messages: the stream waits while the group changes, so that
        # both changes happen mid-stream whatever the machine's speed.
        if sent == int(N * 0.3):
            pipe.start("router", "router-3")
            await wait_for(lambda: routers(3), within=60, what="the third router to join")
            notes["stored_at_join"] = await pipe.stored()
        elif sent == int(N * 0.6):
            notes["stored_at_leave"] = await pipe.stored()
            assert await asyncio.to_thread(pipe.procs.terminate, "router-1", 10.0) == 0
            await wait_for(lambda: routers(2), within=60, what="the group to settle on two routers")

    try:
        pipe.start("classifier")
        pipe.start("router", "router-1")
        pipe.start("router", "router-2")
        await wait_for(lambda: routers(2), within=60, what="two routers in the group")
        await pipe.send(messages, rate=RATE, during=membership_changes)
        await pipe.wait_stored(N, within=120)
        outcome = await pipe.outcome("router joins + router leaves", expected)
        outcome.notes.update(notes)
    finally:
        codes = await pipe.close()
    outcome.assert_delivered()
    assert outcome.dead_lettered == 0
    assert codes == dict.fromkeys(codes, 0), codes
