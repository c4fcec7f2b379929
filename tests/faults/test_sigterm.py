"""SIGTERM mid-batch: each stage stops within 10 s with exit code 0, what it committed is durable, nothing
is stored twice.

5,000 mentions go to `mentions.raw` up front. Once the router has committed a quarter of them, the
classifier and the router both get SIGTERM (a node drained); at that moment every record below a group's
committed offsets must have its output durable (classified on `mentions.classified`; routed in the
database): an in-flight batch either finished or stays uncommitted, to be delivered again. Both are started
again; at 60 % the router alone gets SIGTERM once more (a rolling update).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.conftest import KafkaEnv
from tests.faults.harness import FaultPipeline, expected_departments, generated

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.postgres, pytest.mark.e2e]

N = 5_000
SHUTDOWN_LIMIT_S = 10.0


async def _terminate(pipe: FaultPipeline, name: str) -> float:
    """SIGTERM `name`; how long it took to exit (fails unless it exits with 0 within the limit)."""
    started = time.monotonic()
    code = await asyncio.to_thread(pipe.procs.terminate, name, SHUTDOWN_LIMIT_S)
    assert code == 0, (
        f"{name} exited with {code} after SIGTERM (None: still running after {SHUTDOWN_LIMIT_S}s)"
    )
    return round(time.monotonic() - started, 2)


@pytest.mark.timeout(150)
async def test_sigterm_mid_batch(kafka: KafkaEnv, pg_url: str, tmp_path: Path) -> None:
    pipe = FaultPipeline(bootstrap=kafka.bootstrap, database_url=pg_url, prefix=kafka.prefix, logs=tmp_path)
    await pipe.create_topics()
    messages, mentions = generated(N, settings=pipe.settings, run_id=kafka.prefix)
    expected = expected_departments(mentions, pipe.settings)
    classified = pipe.settings.topic_classified
    shutdowns: dict[str, float] = {}
    try:
        pipe.start("classifier")
        pipe.start("router")
        await pipe.send(messages)
        at = await pipe.wait_committed_at_least("router", classified, N // 4, within=90)
        assert at < N, "the router finished before it could be stopped"
        shutdowns["classifier"], shutdowns["router"] = await asyncio.gather(
            _terminate(pipe, "classifier"), _terminate(pipe, "router")
        )
        await pipe.assert_committed_is_durable()
        pipe.start("classifier", "classifier-2")
        pipe.start("router", "router-2")
        at2 = await pipe.wait_committed_at_least("router", classified, int(N * 0.6), within=90)
        assert at2 < N, "the router finished before it could be stopped again"
        shutdowns["router-2"] = await _terminate(pipe, "router-2")
        await pipe.assert_committed_is_durable()
        pipe.start("router", "router-3")
        await pipe.wait_stored(N, within=120)
        outcome = await pipe.outcome("SIGTERM mid-batch (x2)", expected)
        outcome.notes.update(shutdown_s=shutdowns, router_committed_at_sigterm=[at, at2])
    finally:
        codes = await pipe.close()
    outcome.assert_delivered()
    assert outcome.dead_lettered == 0
    assert codes == dict.fromkeys(codes, 0), codes
