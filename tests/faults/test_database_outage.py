"""PostgreSQL stopped for 20 s mid-stream: the router pauses and resumes, the API answers 503 and recovers.

A PostgreSQL server of this test's own (devsupport/private.py; the shared one is never touched), the
classifier, the router and the API as separate processes on the shared broker, 5,000 mentions published at
250 a second. Once 1,000 are stored, the server is stopped (fast shutdown: every connection is cut) for
20 s and started again. Meanwhile the router commits nothing, `/readyz` and writes answer 503 with a
problem+json body and Retry-After; afterwards everything is stored once and the API takes writes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devsupport.kafka import read_topics
from devsupport.private import PrivatePostgres
from devsupport.processes import free_port
from devsupport.scenario import wait_for
from shared.bus.base import Record
from shared.bus.codec import decode
from shared.db import migrate
from shared.events import MentionIngested
from tests.conftest import KafkaEnv
from tests.faults.harness import FaultPipeline, expected_departments, generated

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.postgres, pytest.mark.e2e]

N = 5_000
RATE = 250.0
OUTAGE_S = 20.0


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.remove()


def _assert_problem_503(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert int(response.headers["retry-after"]) > 0
    body = response.json()
    assert body["status"] == 503
    assert {"type", "title", "detail"} <= body.keys()


@pytest.mark.timeout(180)
async def test_database_stopped_for_20s_mid_stream(
    kafka: KafkaEnv, private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    await migrate(private_postgres.url)
    port = free_port()
    key = f"mr_{secrets.token_hex(4)}_{secrets.token_urlsafe(24)}"
    pipe = FaultPipeline(
        bootstrap=kafka.bootstrap,
        database_url=private_postgres.url,
        prefix=kafka.prefix,
        logs=tmp_path,
        MR_API_PORT=str(port),
        MR_INGEST_ALLOWED_NETWORKS="127.0.0.1",
        MR_API_BOOTSTRAP_KEY=key,
    )
    await pipe.create_topics()
    messages, _ = generated(N, settings=pipe.settings, run_id=kafka.prefix)
    classified = pipe.settings.topic_classified
    source = {"name": "Outage blog", "url": "http://127.0.0.1:9/feed.xml", "influence": 2}
    post = {"source": "mastodon", "url": "https://social.example/@dana/1", "text": "Tessellate is down again"}
    notes: dict[str, object] = {}
    sending: asyncio.Task[None] | None = None
    try:
        for service in ("classifier", "router", "api"):
            pipe.start(service)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=10, headers={"Authorization": f"Bearer {key}"}
        ) as api:

            async def readyz(code: int) -> bool:
                pipe.procs.check_alive()
                try:
                    return (await api.get("/readyz")).status_code == code
                except httpx.TransportError:
                    return False

            await wait_for(lambda: readyz(200), within=60, what="the API to be ready")
            sending = asyncio.create_task(pipe.send(messages, rate=RATE))
            notes["stored_at_stop"] = await pipe.wait_count_at_least(1_000, within=60)
            await asyncio.to_thread(private_postgres.stop)
            stopped = time.monotonic()

            await wait_for(lambda: readyz(503), within=10, what="/readyz to answer 503")
            _assert_problem_503(await api.post("/v1/sources", json=source))
            _assert_problem_503(
                await api.post("/v1/mentions", json=post, headers={"Idempotency-Key": "outage-1"})
            )
            await asyncio.sleep(3)
            paused_from = await pipe.committed("router", classified)
            await asyncio.sleep(max(0.0, stopped + OUTAGE_S - time.monotonic()))
            paused_to = await pipe.committed("router", classified)
            pipe.procs.check_alive()
            # The router moved no offset while the database was away: it paused, it did not skip.
            assert paused_to == paused_from, (paused_from, paused_to)
            notes["router_committed_during_outage"] = paused_from
            notes["classified_during_outage"] = await pipe.committed("classifier", pipe.settings.topic_raw)

            await asyncio.to_thread(private_postgres.start)
            await wait_for(lambda: readyz(200), within=30, what="/readyz to recover")
            created = await api.post("/v1/sources", json=source)
            assert created.status_code == 201, created.text
            pushed = await api.post("/v1/mentions", json=post, headers={"Idempotency-Key": "outage-1"})
            assert pushed.status_code == 202, pushed.text
            await sending
            await pipe.wait_stored(N + 1, within=120)
        raw = await read_topics(kafka.bootstrap, [pipe.settings.topic_raw])
        mentions = {
            decode(Record(r.topic, r.partition, r.offset, r.key.decode(), r.value), MentionIngested).mention
            for r in raw
        }
        expected = expected_departments(mentions, pipe.settings)
        assert len(expected) == N + 1
        outcome = await pipe.outcome("PostgreSQL stopped 20 s mid-stream", expected)
        outcome.notes.update(notes)
    finally:
        if sending is not None and not sending.done():
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sending
        codes = await pipe.close()
    outcome.assert_delivered()
    assert outcome.dead_lettered == 0
    assert codes == dict.fromkeys(codes, 0), codes
