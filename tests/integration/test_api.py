"""The REST API on a real PostgreSQL, with mentions stored by the router's own code."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from devsupport.apiclient import api_client
from devsupport.factories import TEMPLATES, classified_event
from devsupport.processes import free_port
from services.router.service import RouterService
from shared.bus import MemoryBus
from shared.bus.base import Record
from shared.bus.codec import encode
from shared.db import create_engine, session_factory
from shared.routing import RuleSet
from shared.settings import BusKind, Settings

pytestmark = pytest.mark.postgres

N = 45


@pytest.fixture
async def api(pg_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings().model_copy(
        update={"database_url": pg_url, "bus": BusKind.MEMORY, "ingest_allowed_networks": "127.0.0.1"}
    )
    engine = create_engine(pg_url)
    # Store N mentions the way the router does.
    router = RouterService(
        settings=settings,
        bus=MemoryBus(),
        sessions=session_factory(engine),
        rules=RuleSet.from_file(settings.routing_file),
    )
    events = [classified_event(i) for i in range(N)]

    records = [
        Record(topic="t", partition=0, offset=i, key=m.key, value=m.value)
        for i, m in enumerate(encode(topic="t", key=e.mention.id, event=e, source="/t") for e in events)
    ]
    for i in range(0, N, 10):
        await router.handle(records[i : i + 10])
    async with api_client(settings, engine=engine) as client:
        yield client
    await engine.dispose()


async def _all(api: httpx.AsyncClient, **params: object) -> list[dict[str, object]]:
    items: list[dict[str, object]] = []
    cursor = None
    while True:
        query = dict(params)
        if cursor:
            query["cursor"] = cursor
        page = (await api.get("/v1/mentions", params=query)).json()
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def test_list_pages_through_every_mention_once_newest_first(api: httpx.AsyncClient) -> None:
    items = await _all(api, limit=7)
    assert len(items) == N
    assert len({m["id"] for m in items}) == N
    keys = [(m["routed_at"], m["id"]) for m in items]
    assert keys == sorted(keys, reverse=True)


async def test_filters(api: httpx.AsyncClient) -> None:
    support = await _all(api, department="support", limit=50)
    assert support and all(any(a["department"] == "support" for a in m["assignments"]) for m in support)
    expected_support = sum("support" in TEMPLATES[i % len(TEMPLATES)][2] for i in range(N))
    assert len(support) == expected_support
    security = await _all(api, topic="security")
    assert security and all("security" in m["topics"] for m in security)
    negative = await _all(api, sentiment="negative")
    assert negative and all(m["sentiment"] == "negative" for m in negative)
    both = await _all(api, department="pr", topic="security")
    assert {m["id"] for m in both} == {m["id"] for m in security}


async def test_detail_and_not_found(api: httpx.AsyncClient) -> None:
    some = (await api.get("/v1/mentions", params={"limit": 1})).json()["items"][0]
    detail = await api.get(f"/v1/mentions/{some['id']}")
    assert detail.status_code == 200
    body = detail.json()
    assert body["classification"]["sentiment_evidence"]
    assert body["assignments"][0]["status"] == "new"
    assert (await api.get("/v1/mentions/nope")).status_code == 404


async def test_queues_count_every_assignment(api: httpx.AsyncClient) -> None:
    queues = (await api.get("/v1/queues")).json()["departments"]
    assert [q["department"] for q in queues] == ["marketing", "pr", "support", "rnd", "product"]
    for q in queues:
        expected = sum(q["department"] in TEMPLATES[i % len(TEMPLATES)][2] for i in range(N))
        assert q["total"] == expected == q["by_status"].get("new", 0)


async def test_invalid_requests_get_422(api: httpx.AsyncClient) -> None:
    assert (await api.get("/v1/mentions", params={"limit": 0})).status_code == 422
    assert (await api.get("/v1/mentions", params={"limit": 1000})).status_code == 422
    assert (await api.get("/v1/mentions", params={"department": "legal"})).status_code == 422
    assert (await api.get("/v1/mentions", params={"cursor": "!!!not-a-cursor"})).status_code == 422


async def test_sources_create_list_and_conflict(api: httpx.AsyncClient) -> None:
    body = {"name": "A blog", "url": "http://127.0.0.1:9/feed/", "influence": 3}
    created = await api.post("/v1/sources", json=body)
    assert created.status_code == 201, created.text
    source = created.json()
    assert source["kind"] == "feed" and source["enabled"] and source["items_seen"] == 0
    assert (await api.post("/v1/sources", json=body)).status_code == 409
    listed = (await api.get("/v1/sources")).json()["items"]
    assert [s["id"] for s in listed] == [source["id"]]
    for bad in (
        {"name": "x", "url": "not a url"},
        {"name": "x", "url": "ftp://example.net/feed"},
        {"name": "", "url": "https://example.net/feed"},
        {"name": "x", "url": "https://example.net/feed", "influence": 9},
        {"name": "x", "url": "https://example.net/feed", "surprise": True},
    ):
        assert (await api.post("/v1/sources", json=bad)).status_code == 422, bad


async def test_health(api: httpx.AsyncClient) -> None:
    assert (await api.get("/healthz")).json() == {"status": "ok", "checks": {}}
    ready = await api.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "broker": "ok"}
    assert (await api.get("/openapi.json")).json()["info"]["title"] == "Mention Router"


async def test_readyz_is_503_when_the_database_is_unreachable() -> None:
    # A port where nothing listens: the API must answer, and say it is not ready.
    url = "postgresql+asyncpg://mr:mr@127.0.0.1:9/nothing"
    settings = Settings().model_copy(update={"database_url": url})
    async with api_client(settings) as client:
        ready = await client.get("/readyz")
        assert (await client.get("/healthz")).status_code == 200
    assert ready.status_code == 503
    assert ready.json()["status"] == "unavailable"


async def test_readyz_is_503_when_the_broker_is_unreachable(pg_url: str) -> None:
    port = free_port()  # nothing listens there
    settings = Settings().model_copy(
        update={"database_url": pg_url, "bus": BusKind.KAFKA, "kafka_bootstrap_servers": f"127.0.0.1:{port}"}
    )
    async with api_client(settings) as client:
        ready = await client.get("/readyz")
        reads = await client.get("/v1/queues")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] == "ok" and ready.json()["checks"]["broker"] != "ok"
    assert reads.status_code == 200, "reads keep working without the broker"
