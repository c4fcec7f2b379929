"""The broker killed with SIGKILL mid-stream and started again: the services recover by themselves.

A Kafka broker of this test's own (devsupport/private.py; the shared one is never touched), the
classifier and the router as separate processes, 5,000 mentions. Once the router has committed a quarter
of them, the broker is killed with SIGKILL, left down for a few seconds, and started again on the same
data; the services are not restarted.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devsupport.private import PrivateKafka
from tests.faults.harness import FaultPipeline, expected_departments, generated

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.postgres, pytest.mark.e2e]

N = 5_000


@pytest.fixture
def private_kafka() -> Iterator[PrivateKafka]:
    broker = PrivateKafka()
    try:
        broker.start()
        yield broker
    finally:
        broker.remove()


@pytest.mark.timeout(180)
async def test_broker_killed_mid_stream_and_restarted(
    private_kafka: PrivateKafka, pg_url: str, tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}."
    pipe = FaultPipeline(bootstrap=private_kafka.bootstrap, database_url=pg_url, prefix=prefix, logs=tmp_path)
    await pipe.create_topics()
    messages, mentions = generated(N, settings=pipe.settings, run_id=prefix)
    expected = expected_departments(mentions, pipe.settings)
    classified = pipe.settings.topic_classified
    try:
        pipe.start("classifier")
        pipe.start("router")
        await pipe.send(messages)
        at = await pipe.wait_committed_at_least("router", classified, N // 4, within=90)
        assert at < N, "the router finished before the broker could be killed"
        await asyncio.to_thread(private_kafka.kill)
        stored_at_kill = await pipe.stored()
        await asyncio.sleep(3)
        pipe.procs.check_alive()
        await asyncio.to_thread(private_kafka.start)
        await pipe.wait_stored(N, within=120)
        outcome = await pipe.outcome("SIGKILL broker mid-stream", expected)
        outcome.notes.update(router_committed_at_kill=at, stored_at_kill=stored_at_kill)
    finally:
        codes = await pipe.close()
    outcome.assert_delivered()
    assert outcome.dead_lettered == 0
    assert codes == dict.fromkeys(codes, 0), codes
