"""The foundation's proof: the four services as separate processes on real Kafka and PostgreSQL.

500 feed entries served by a local HTTP server reach the database with their assignments, appear on
the right `mentions.routed.<department>` topics and come back from the API; polling again duplicates
nothing; SIGTERM stops every process cleanly.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from devsupport.feedserver import FeedServer
from devsupport.kafka import end_offsets_total, read_topics
from devsupport.processes import ServiceProcesses, free_port
from devsupport.scenario import (
    assert_api_agrees,
    expected_assignments,
    register_sources,
    serve_feeds,
    wait_for,
)
from shared.db import AssignmentRow, MentionRow, create_engine, session_factory
from shared.settings import DEPARTMENTS, REPO_ROOT
from tests.conftest import KafkaEnv

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.postgres]

FEEDS, PER_FEED = 5, 100
ADMIN_KEY = f"mr_{secrets.token_hex(4)}_{secrets.token_urlsafe(32)}"


async def test_four_processes_route_every_entry_once(
    kafka: KafkaEnv, empty_pg_url: str, server: FeedServer, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "MR_BUS": "kafka",
        "MR_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "MR_TOPIC_PREFIX": kafka.prefix,
        "MR_DATABASE_URL": empty_pg_url,
        "MR_API_PORT": str(port),
        "MR_INGEST_SOURCES_REFRESH_S": "0.5",
        # The test feeds are served on loopback, which the SSRF guard refuses unless allowed.
        "MR_INGEST_ALLOWED_NETWORKS": "127.0.0.1",
        # As deployed: keys on, the first admin key provisioned from the environment.
        "MR_API_AUTH": "true",
        "MR_API_BOOTSTRAP_KEY": ADMIN_KEY,
        "PYTHONUNBUFFERED": "1",
    }
    migrate = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.cli", "migrate"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stderr.decode()

    feeds = serve_feeds(server, feeds=FEEDS, per_feed=PER_FEED)
    procs = ServiceProcesses(env, tmp_path)
    for name in ("api", "router", "classifier", "ingest"):
        procs.start(name)
    engine = create_engine(empty_pg_url)
    sessions = session_factory(engine)
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=10, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
        ) as api:

            async def api_ready() -> bool:
                procs.check_alive()
                try:
                    return (await api.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_for(api_ready, within=60, what="the API to be ready")
            anonymous = await api.get("/v1/queues", headers={"Authorization": ""})
            assert anonymous.status_code == 401, "keys are on, as deployed"
            await register_sources(api, server, feeds)
            expected = expected_assignments(feeds)
            assert len(expected) == FEEDS * PER_FEED
            total_assignments = sum(len(d) for d in expected.values())

            async def counts() -> tuple[int, int]:
                async with sessions() as s:
                    mentions = await s.scalar(select(func.count()).select_from(MentionRow))
                    assignments = await s.scalar(select(func.count()).select_from(AssignmentRow))
                return int(mentions or 0), int(assignments or 0)

            async def all_stored() -> bool:
                procs.check_alive()
                return await counts() == (len(expected), total_assignments)

            await wait_for(all_stored, within=180, what=f"{len(expected)} mentions in PostgreSQL")

            # The database: exactly the expected mentions, each with exactly its departments.
            async with sessions() as s:
                stored = {m for m in (await s.scalars(select(MentionRow.id))).all()}
                pairs = (await s.execute(select(AssignmentRow.mention_id, AssignmentRow.department))).all()
            assert stored == set(expected)
            by_mention: dict[str, set[str]] = {}
            for mention, department in pairs:
                by_mention.setdefault(mention, set()).add(department)
            assert by_mention == {k: set(v) for k, v in expected.items()}

            # The department topics: every assignment, on its own department's topic, with CloudEvents.
            topics = [f"{kafka.prefix}mentions.routed.{d}" for d in DEPARTMENTS]
            routed = await read_topics(kafka.bootstrap, topics)
            seen = {(r.key.decode(), r.topic.rsplit(".", 1)[1]) for r in routed}
            assert seen == {(m, d) for m, ds in expected.items() for d in ds}
            headers = dict(routed[0].headers)
            assert headers["ce_specversion"] == b"1.0"
            assert headers["ce_type"] == b"io.mentionrouter.mention.routed.v1"
            assert {"ce_id", "ce_source", "ce_time", "content-type"} <= headers.keys()

            # The API returns all of them, with the same assignments.
            await assert_api_agrees(api, expected)

            # Polling again publishes nothing new: wait for two more polls of every source.
            raw_before = await end_offsets_total(kafka.bootstrap, f"{kafka.prefix}mentions.raw")
            assert raw_before == len(expected)
            marker = time.time()

            async def polled_twice_more() -> bool:
                procs.check_alive()
                sources = (await api.get("/v1/sources")).json()["items"]
                return all(
                    s["last_polled_at"]
                    and _ts(s["last_polled_at"]) > marker + 1.5
                    and s["last_error"] is None
                    for s in sources
                )

            await wait_for(polled_twice_more, within=60, what="every source to be polled again")
            assert sum(server.not_modified.values()) > 0, "conditional GET never answered 304"
            sources = (await api.get("/v1/sources")).json()["items"]
            assert Counter(s["items_seen"] for s in sources) == Counter({PER_FEED: FEEDS})
            assert await end_offsets_total(kafka.bootstrap, f"{kafka.prefix}mentions.raw") == raw_before
            assert await counts() == (len(expected), total_assignments)
    finally:
        await engine.dispose()
        codes = procs.stop()
    assert codes == dict.fromkeys(codes, 0), {n: procs.tail(n) for n, c in codes.items() if c != 0}


def _ts(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value).timestamp()
