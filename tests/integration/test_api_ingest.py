"""The API's ingest side on the real broker and database: pushed mentions (with Idempotency-Key) and
source management with the SSRF guard."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from devsupport.apiclient import api_client
from devsupport.sources import read_raw
from shared.db import SourceRow, create_engine, session_factory
from shared.events import MentionKind
from shared.settings import Settings
from tests.conftest import KafkaEnv

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


@pytest.fixture
async def settings(kafka: KafkaEnv, pg_url: str) -> Settings:
    return kafka.settings(database_url=pg_url)


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(settings) as c:
        yield c


def _post(i: int, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "source": "mastodon",
        "url": f"https://social.example/@dana/{1000 + i}?utm_source=share",
        "title": "",
        "text": f"The Tessellate app crashed again and it is not the first time this week (#{i})",
        "author": "@dana",
        "external_id": f"1000{i}",
        "published_at": "2026-11-20T10:00:00+01:00",
    }
    body.update(overrides)
    return body


async def test_push_one_and_many(api: httpx.AsyncClient, settings: Settings) -> None:
    one = await api.post("/v1/mentions", json=_post(0))
    assert one.status_code == 202, one.text
    assert one.json()["accepted"] == 1
    many = await api.post("/v1/mentions", json=[_post(i, kind="comment") for i in range(1, 4)])
    assert many.status_code == 202
    ids = [one.json()["ids"][0], *many.json()["ids"]]
    published = {e.mention.id: e.mention for e in await read_raw(settings, missing_ok=True)}
    assert list(published) == ids or set(published) == set(ids)
    first = published[ids[0]]
    assert first.source_id == "push-mastodon" and first.source_name == "mastodon"
    assert first.url == "https://social.example/@dana/1000", "tracking parameters are removed"
    assert first.published_at.isoformat() == "2026-11-20T09:00:00+00:00"
    assert first.language_hint == "en"
    assert published[ids[1]].kind is MentionKind.COMMENT
    # The same post pushed again (an integration retrying without a key) gets the same id.
    again = await api.post("/v1/mentions", json=_post(0))
    assert again.json()["ids"] == [ids[0]]


async def test_push_rejects_bad_input_with_422(api: httpx.AsyncClient, settings: Settings) -> None:
    cases: list[Any] = [
        [],
        [_post(i) for i in range(1001)],
        _post(0, url="not a url"),
        _post(0, source="has spaces"),
        _post(0, kind="story"),
        _post(0, published_at="2026-11-20T10:00:00"),  # no time zone
        _post(0, surprise=1),
        {"source": "x"},
        # longer than mentions.url / in_reply_to store (2,000): refused here, not dead-lettered later
        _post(0, url="https://example.com/" + "a" * 1981),
        _post(0, in_reply_to="https://example.com/" + "a" * 1981),
    ]
    for body in cases:
        response = await api.post("/v1/mentions", json=body)
        assert response.status_code == 422, (str(body)[:80], response.text[:200])
    assert await read_raw(settings, missing_ok=True) == [], "nothing was published for a rejected request"


async def test_idempotency_key_makes_a_retry_publish_nothing(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    body = [_post(i) for i in range(5)]
    headers = {"Idempotency-Key": "batch-2026-11-20-001"}
    first = await api.post("/v1/mentions", json=body, headers=headers)
    retry = await api.post("/v1/mentions", json=body, headers=headers)
    assert first.status_code == retry.status_code == 202
    assert retry.json() == first.json()
    assert retry.headers["Idempotency-Replayed"] == "true"
    assert len(await read_raw(settings, missing_ok=True)) == 5
    other = await api.post("/v1/mentions", json=body[:2], headers=headers)
    assert other.status_code == 422
    assert "different request" in other.text
    assert len(await read_raw(settings, missing_ok=True)) == 5


async def test_push_answers_503_when_the_broker_is_away(pg_url: str) -> None:
    settings = Settings().model_copy(
        update={"database_url": pg_url, "kafka_bootstrap_servers": "127.0.0.1:9"}
    )
    async with api_client(settings) as c:
        response = await c.post("/v1/mentions", json=_post(0))
        reads = await c.get("/v1/mentions")
    assert response.status_code == 503
    assert "broker" in response.text
    assert reads.status_code == 200, "reads work without the broker"


async def test_sources_are_managed_and_refuse_unsafe_urls(api: httpx.AsyncClient, settings: Settings) -> None:
    for url, why in (
        ("http://127.0.0.1:8080/feed", "loopback"),
        ("http://[::1]/feed", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://10.1.2.3/feed", "private"),
        ("http://192.168.0.10/feed", "private"),
    ):
        refused = await api.post("/v1/sources", json={"name": "x", "url": url})
        assert refused.status_code == 422, url
        assert why in refused.json()["detail"], refused.text
    bad_filter = await api.post(
        "/v1/sources", json={"name": "x", "url": "http://93.184.215.14/feed", "filter": '"unclosed'}
    )
    assert bad_filter.status_code == 422

    created = await api.post(
        "/v1/sources",
        json={
            "name": "News",
            "url": "http://93.184.215.14/feed",
            "filter": '"acme cloud" OR acmecloud -jobs',
            "backfill": "new",
        },
    )
    assert created.status_code == 201, created.text
    source = created.json()
    assert source["filter"] == '"acme cloud" OR acmecloud -jobs' and source["backfill"] == "new"
    sid = source["id"]

    disabled = await api.patch(f"/v1/sources/{sid}", json={"enabled": False, "poll_interval_seconds": 900})
    assert disabled.status_code == 200
    assert disabled.json()["enabled"] is False and disabled.json()["poll_interval_seconds"] == 900
    assert (await api.patch(f"/v1/sources/{sid}", json={"url": "http://127.0.0.1/x"})).status_code == 422
    assert (await api.patch(f"/v1/sources/{sid}", json={"filter": "OR"})).status_code == 422
    assert (await api.patch("/v1/sources/nope", json={"enabled": True})).status_code == 404
    assert (await api.get(f"/v1/sources/{sid}")).json()["name"] == "News"

    # A discovered comment feed goes with its parent.
    engine = create_engine(settings.database_url)
    async with session_factory(engine)() as session:
        parent = await session.get(SourceRow, sid)
        assert parent is not None
        session.add(
            SourceRow(
                id="child",
                name="Comments",
                url="http://93.184.215.14/post/feed",
                kind="comments",
                enabled=True,
                poll_interval_s=900,
                influence=1,
                created_at=parent.created_at,
                updated_at=parent.created_at,
                consecutive_failures=0,
                items_seen=0,
                parent_id=sid,
            )
        )
        await session.commit()
    listed = (await api.get("/v1/sources", params={"include_discovered": "false"})).json()["items"]
    assert [s["id"] for s in listed] == [sid]
    assert (await api.delete(f"/v1/sources/{sid}")).status_code == 204
    async with session_factory(engine)() as session:
        assert (await session.scalars(select(SourceRow))).all() == []
    await engine.dispose()
    assert (await api.delete(f"/v1/sources/{sid}")).status_code == 404
