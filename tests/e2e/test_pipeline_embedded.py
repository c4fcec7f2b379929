"""The same scenario in one process: the embedded runner on the in-memory bus and SQLite."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from devsupport.factories import TEMPLATES
from devsupport.feedserver import FeedServer
from devsupport.processes import free_port
from devsupport.scenario import (
    assert_api_agrees,
    expected_assignments,
    register_sources,
    serve_feeds,
    wait_for,
)
from services.embedded import embedded_settings, run_embedded
from shared.bus import MemoryBroker
from shared.settings import DEPARTMENTS

pytestmark = pytest.mark.e2e

FEEDS, PER_FEED = 5, 100


async def test_embedded_runner_routes_every_entry_once(server: FeedServer, tmp_path: Path) -> None:
    port = free_port()
    settings = embedded_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'mr.db'}",
        api_port=port,
        ingest_sources_refresh_s=0.5,
        ingest_allowed_networks="127.0.0.1",
    )
    broker = MemoryBroker(partitions=settings.topic_partitions)
    stop = asyncio.Event()
    runner = asyncio.create_task(run_embedded(settings, stop=stop, sources_file=None, broker=broker))
    feeds = serve_feeds(server, feeds=FEEDS, per_feed=PER_FEED)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as api:

            async def ready() -> bool:
                if runner.done():
                    runner.result()
                try:
                    return (await api.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_for(ready, within=30, what="the embedded API")
            await register_sources(api, server, feeds)
            expected = expected_assignments(feeds)
            total = sum(len(d) for d in expected.values())

            async def all_routed() -> bool:
                queues = (await api.get("/v1/queues")).json()["departments"]
                return sum(q["total"] for q in queues) >= total

            await wait_for(all_routed, within=120, what="every assignment")
            await assert_api_agrees(api, expected)

            routed = [r for d in DEPARTMENTS for r in broker.records(settings.topic_routed(d))]
            assert {(r.key, r.topic.rsplit(".", 1)[1]) for r in routed} == {
                (m, d) for m, ds in expected.items() for d in ds
            }
            raw_before = len(broker.records(settings.topic_raw))
            assert raw_before == len(expected)

            marker = time.time()

            async def polled_again() -> bool:
                sources = (await api.get("/v1/sources")).json()["items"]
                return all(s["last_polled_at"] and _ts(s["last_polled_at"]) > marker + 1.5 for s in sources)

            await wait_for(polled_again, within=60, what="every source to be polled again")
            assert len(broker.records(settings.topic_raw)) == raw_before
            await assert_api_agrees(api, expected)

            # Posts pushed in from elsewhere take the same road.
            pushed = await api.post(
                "/v1/mentions",
                json=[
                    {"source": "forum", "url": f"https://forum.example/t/{i}", "title": title, "text": text}
                    for i, (title, text, _) in enumerate(TEMPLATES[:3])
                ],
                headers={"Idempotency-Key": "e2e-push-1"},
            )
            assert pushed.status_code == 202, pushed.text
            for mention_id, (_, _, departments) in zip(pushed.json()["ids"], TEMPLATES[:3], strict=True):
                expected[mention_id] = departments

            async def pushed_routed() -> bool:
                codes = [(await api.get(f"/v1/mentions/{i}")).status_code for i in pushed.json()["ids"]]
                return codes == [200, 200, 200]

            await wait_for(pushed_routed, within=30, what="the pushed mentions to be routed")
            await assert_api_agrees(api, expected)
    finally:
        stop.set()
        await asyncio.wait_for(runner, 15)


def _ts(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value).timestamp()
