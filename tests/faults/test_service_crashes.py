"""A stage killed with SIGKILL mid-batch and started again: nothing lost, nothing stored twice.

5,000 mentions go to `mentions.raw` up front; the classifier and the router run as separate processes on
the shared broker and a fresh database. Once the victim has committed a fifth of its input, it is killed
with SIGKILL (if possible at a moment its next batch's output is durable and its offsets not yet
committed) and a new process takes its place; again at 45 %.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from devsupport.kafka import end_offsets_total, read_topics
from tests.conftest import KafkaEnv
from tests.faults.harness import FaultPipeline, expected_departments, generated

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.postgres, pytest.mark.e2e]

# Enough work that a fast stage is still mid-stream when it is killed the second time.
N = 10_000


async def _progress(pipe: FaultPipeline, victim: str) -> tuple[int, int]:
    """(records of its input the victim has committed, its durable output: published by the classifier,
    stored by the router). Output read first, so that output > committed means some was uncommitted."""
    s = pipe.settings
    if victim == "classifier":
        output = await end_offsets_total(pipe.bootstrap, s.topic_classified)
        return await pipe.committed("classifier", s.topic_raw), output
    output = await pipe.stored() or 0
    return await pipe.committed("router", s.topic_classified), output


async def _kill_in_the_window(
    pipe: FaultPipeline, victim: str, name: str, *, latest: int, within: float = 5.0
) -> dict[str, int]:
    """SIGKILL `name` in the moment hardest to survive if one comes within `within` s: a batch's output
    durable, its offsets not committed yet; else once it has committed `latest` records, so that it is
    still mid-stream (each check takes a few Kafka requests, while a fast stage moves thousands a
    second). What was uncommitted at its death is measured afterwards."""
    deadline = time.monotonic() + within
    while True:
        committed, output = await _progress(pipe, victim)
        if output > committed or time.monotonic() > deadline or committed >= latest:
            break
        await asyncio.sleep(0.005)
    assert committed < N, f"{victim} finished before it could be killed"
    assert pipe.procs.kill(name) == -9
    s = pipe.settings
    if victim == "classifier":
        offsets = await pipe.committed_offsets("classifier", s.topic_raw)
        done = await pipe.keys_below(s.topic_raw, offsets)
        out = {r.key.decode() for r in await read_topics(pipe.bootstrap, [s.topic_classified]) if r.key}
    else:
        offsets = await pipe.committed_offsets("router", s.topic_classified)
        done = await pipe.keys_below(s.topic_classified, offsets)
        out = await pipe.stored_ids()
    # Exact, now that it is dead: what it had made durable beyond what it had committed.
    return {"committed": sum(offsets.values()), "durable_output_uncommitted": len(out - done)}


@pytest.mark.timeout(150)
@pytest.mark.parametrize("victim", ["classifier", "router"])
async def test_stage_killed_mid_batch_and_restarted(
    victim: str, kafka: KafkaEnv, pg_url: str, tmp_path: Path
) -> None:
    pipe = FaultPipeline(bootstrap=kafka.bootstrap, database_url=pg_url, prefix=kafka.prefix, logs=tmp_path)
    await pipe.create_topics()
    messages, mentions = generated(N, settings=pipe.settings, run_id=kafka.prefix)
    expected = expected_departments(mentions, pipe.settings)
    topic = pipe.settings.topic_raw if victim == "classifier" else pipe.settings.topic_classified
    try:
        pipe.start("classifier")
        pipe.start("router")
        await pipe.send(messages)
        name = victim
        kills: list[dict[str, int]] = []
        for k, share in enumerate((0.2, 0.45)):
            # The restarted process is killed only once it has made progress of its own.
            at_least = max(int(N * share), kills[-1]["committed"] + 500 if kills else 0)
            await pipe.wait_committed_at_least(victim, topic, at_least, within=90)
            kills.append(await _kill_in_the_window(pipe, victim, name, latest=at_least + N // 10))
            await pipe.assert_committed_is_durable()
            name = pipe.start(victim, f"{victim}-{k + 2}")
        await pipe.wait_stored(N, within=120)
        outcome = await pipe.outcome(f"SIGKILL {victim} x2 mid-batch", expected)
        outcome.notes["kills"] = kills
    finally:
        codes = await pipe.close()
    outcome.assert_delivered()
    assert outcome.dead_lettered == 0
    assert codes == dict.fromkeys(codes, 0), codes
