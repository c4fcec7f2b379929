"""With the database unreachable, the API answers 503 with a problem+json body and Retry-After: on
/readyz (its own Health body), on writes and on reads. The outage under load, with a real server stopped
and started again, is tests/faults/test_database_outage.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from devsupport.apiclient import api_client
from devsupport.processes import free_port
from shared.settings import BusKind, Settings


@pytest.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    # A port nobody listens on: every connection is refused, as while PostgreSQL is stopped.
    url = f"postgresql+asyncpg://mr:mr@127.0.0.1:{free_port()}/mention_router"
    settings = Settings().model_copy(
        update={
            "database_url": url,
            "bus": BusKind.MEMORY,
            "api_auth": False,
            "ingest_allowed_networks": "127.0.0.1",
        }
    )
    async with api_client(settings) as client:
        yield client


def _assert_problem_503(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "5"
    body = response.json()
    assert body["status"] == 503 and body["title"] == "Service Unavailable"
    assert "database" in body["detail"] and "retry" in body["detail"]
    assert {"type", "detail"} <= body.keys()


async def test_readyz_and_every_route_that_needs_the_database_answer_503(api: httpx.AsyncClient) -> None:
    ready = await api.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["status"] == "unavailable"
    _assert_problem_503(
        await api.post("/v1/sources", json={"name": "A blog", "url": "http://127.0.0.1:9/feed.xml"})
    )
    post = {"source": "mastodon", "url": "https://social.example/@dana/1", "text": "Tessellate is down"}
    _assert_problem_503(await api.post("/v1/mentions", json=post, headers={"Idempotency-Key": "k-1"}))
    _assert_problem_503(await api.get("/v1/mentions"))
