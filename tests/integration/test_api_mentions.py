"""The mentions list, its filters, sort orders, full-text search and export, the label corrections and
the queue statistics — on PostgreSQL and on SQLite (the embedded default), with mentions stored by the
router's own code at known times."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from devsupport.apiclient import api_client
from devsupport.factories import TEMPLATES, classified_event
from services.api.schemas import MentionPage
from services.router.service import RouterService
from shared.bus import MemoryBus, Record
from shared.bus.codec import encode
from shared.classify.corpus import load_db_corrections
from shared.db import create_engine, session_factory
from shared.routing import RuleSet
from shared.settings import BusKind, Settings

N = len(TEMPLATES) * 3
T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


@pytest.fixture(params=["postgres", "sqlite"])
async def api(
    request: pytest.FixtureRequest, pg_url: str, sqlite_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    url = pg_url if request.param == "postgres" else sqlite_url
    settings = Settings().model_copy(update={"database_url": url, "bus": BusKind.MEMORY})
    engine = create_engine(url)
    clock = {"now": T0}
    router = RouterService(
        settings=settings,
        bus=MemoryBus(),
        sessions=session_factory(engine),
        rules=RuleSet.from_file(settings.routing_file),
        clock=lambda: clock["now"],
    )
    for i in range(N):  # one mention a minute
        clock["now"] = T0 + timedelta(minutes=i)
        e = classified_event(i)
        m = encode(topic="t", key=e.mention.id, event=e, source="/t")
        await router.handle([Record(topic="t", partition=0, offset=i, key=m.key, value=m.value)])
    async with api_client(settings, engine=engine, base_url="http://a") as c:
        yield c
    await engine.dispose()


async def _all(api: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, "limit": 4, **({"cursor": cursor} if cursor else {})}
        r = await api.get("/v1/mentions", params=query)
        assert r.status_code == 200, r.text
        items.extend(r.json()["items"])
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return items


def _expected(departments: set[str]) -> int:
    return sum(bool(TEMPLATES[i % len(TEMPLATES)][2] & departments) for i in range(N))


async def test_filters_combine(api: httpx.AsyncClient) -> None:
    support_or_pr = await _all(api, department=["support", "pr"])
    assert len(support_or_pr) == _expected({"support", "pr"})
    p1 = await _all(api, priority="P1")
    assert p1 and all(any(a["priority"] == "P1" for a in m["assignments"]) for m in p1)
    comments = await _all(api, kind="comment")
    assert comments == []
    since = (T0 + timedelta(minutes=10)).isoformat()
    until = (T0 + timedelta(minutes=20)).isoformat()
    window = await _all(api, since=since, until=until)
    assert len(window) == 10
    praise = await _all(api, intent="praise")
    assert all(m["intent"] == "praise" for m in praise)
    author = await _all(api, author="dana whitfield")
    assert len(author) == N, "author matches whatever the case"
    security_or_how_to = await _all(api, topic=["security"])
    assert all("security" in m["topics"] for m in security_or_how_to)


async def test_status_overdue_and_assignee_filters(api: httpx.AsyncClient) -> None:
    first = (await api.get("/v1/mentions", params={"department": "support", "limit": 1})).json()["items"][0]
    aid = next(a["id"] for a in first["assignments"] if a["department"] == "support")
    await api.post(f"/v1/assignments/{aid}/claim", json={"assignee": "ana"})
    await api.post(f"/v1/assignments/{aid}/respond", json={"text": "On it"})
    responded = await _all(api, department="support", status="responded")
    assert [m["id"] for m in responded] == [first["id"]]
    assert [m["id"] for m in await _all(api, assignee="ana")] == [first["id"]]
    # Everything was routed in November; the SLAs have long run out, except for the responded one.
    overdue = await _all(api, department="support", overdue="true")
    assert len(overdue) == _expected({"support"}) - 1
    assert first["id"] not in {m["id"] for m in overdue}
    assert [m["id"] for m in await _all(api, department="support", overdue="false")] == [first["id"]]


async def test_sort_orders_page_without_gaps(api: httpx.AsyncClient) -> None:
    newest = await _all(api)
    oldest = await _all(api, sort="routed_at")
    assert [m["id"] for m in oldest] == [m["id"] for m in reversed(newest)]
    by_score = await _all(api, sort="sentiment_score")
    scores = [m["sentiment_score"] for m in by_score]
    assert scores == sorted(scores) and len({m["id"] for m in by_score}) == N
    urgent = await _all(api, sort="-urgency")
    assert [m["urgency"] for m in urgent] == sorted((m["urgency"] for m in urgent), reverse=True)
    page = (await api.get("/v1/mentions", params={"limit": 2})).json()
    mixed = await api.get("/v1/mentions", params={"cursor": page["next_cursor"], "sort": "-urgency"})
    assert mixed.status_code == 422, "a cursor belongs to its sort order"


async def test_full_text_search(api: httpx.AsyncClient) -> None:
    crashing = await _all(api, q="crashes")
    assert crashing and all("crashes" in (m["title"] + m["text"]).lower() for m in crashing)
    phrase = await _all(api, q='"dark mode"')
    assert phrase and all("dark mode" in m["text"].lower() for m in phrase)
    assert await _all(api, q="zyzzyva") == []


async def test_export_streams_the_same_rows_as_csv_and_ndjson(api: httpx.AsyncClient) -> None:
    listed = await _all(api, department="rnd")
    ndjson = await api.get("/v1/mentions/export", params={"department": "rnd", "format": "ndjson"})
    assert ndjson.headers["content-type"] == "application/x-ndjson"
    assert [json.loads(line)["id"] for line in ndjson.text.splitlines()] == [m["id"] for m in listed]
    exported = await api.get("/v1/mentions/export", params={"department": "rnd", "format": "csv"})
    assert exported.headers["content-type"].startswith("text/csv")
    assert "attachment" in exported.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [r["id"] for r in rows] == [m["id"] for m in listed]
    assert all("rnd" in r["departments"].split() for r in rows)
    capped = await api.get("/v1/mentions/export", params={"limit": 3})
    assert len(capped.text.splitlines()) == 3


async def test_label_corrections_are_recorded_and_applied(api: httpx.AsyncClient) -> None:
    m = (await api.get("/v1/mentions", params={"limit": 1})).json()["items"][0]
    r = await api.post(
        f"/v1/mentions/{m['id']}/corrections", json={"sentiment": "negative", "topics": ["bug"]}
    )
    assert r.status_code == 201, r.text
    assert [(c["field"], c["value"]) for c in r.json()] == [("sentiment", "negative"), ("topics", ["bug"])]
    detail = (await api.get(f"/v1/mentions/{m['id']}")).json()
    assert (detail["sentiment"], detail["topics"]) == ("negative", ["bug"])
    assert detail["classification"]["sentiment"] == m["classification"]["sentiment"], "the classifier's own"
    assert [c["field"] for c in detail["corrections"]] == ["sentiment", "topics"]
    assert m["id"] in {x["id"] for x in await _all(api, topic="bug")}
    bad = await api.post(f"/v1/mentions/{m['id']}/corrections", json={"topics": ["weather"]})
    assert bad.status_code == 422
    assert (await api.post(f"/v1/mentions/{m['id']}/corrections", json={})).status_code == 422


async def test_queue_statistics(api: httpx.AsyncClient) -> None:
    support = next(
        q for q in (await api.get("/v1/queues")).json()["departments"] if q["department"] == "support"
    )
    assert support["total"] == support["open"] == support["overdue"] == _expected({"support"})
    assert support["oldest_open_age_s"] > 86_400
    assert support["median_first_response_s"] is None
    assert sum(support["open_by_priority"].values()) == support["open"]


async def test_a_list_item_is_written_as_the_schema_and_the_detail_write_it(api: httpx.AsyncClient) -> None:
    # The list is written by orjson from plain rows, the detail through pydantic: both must give the same
    # mention, byte for byte in its JSON values (times in UTC with Z, the evidence as stored).
    r = await api.get("/v1/mentions", params={"limit": 5})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    page = r.json()
    assert MentionPage.model_validate(page).model_dump(mode="json") == page
    assert len(page["items"]) == 5 and page["next_cursor"]
    for item in page["items"]:
        assert item["classification"]["topics"] is not None
        assert item["routed_at"].endswith("Z")
        detail = (await api.get(f"/v1/mentions/{item['id']}")).json()
        assert {k: detail[k] for k in item} == item


async def test_training_reads_the_corrections_the_api_records(
    api: httpx.AsyncClient, request: pytest.FixtureRequest, pg_url: str, sqlite_url: str
) -> None:
    # `mention-router train` folds in the corrections table: what the API writes is what it reads.
    url = pg_url if request.node.callspec.params["api"] == "postgres" else sqlite_url
    m = (await api.get("/v1/mentions", params={"limit": 1})).json()["items"][0]
    r = await api.post(
        f"/v1/mentions/{m['id']}/corrections", json={"sentiment": "negative", "topics": ["bug"]}
    )
    assert r.status_code == 201, r.text
    rows = await asyncio.to_thread(load_db_corrections, url)
    assert rows == [
        {"id": m["id"], "title": m["title"], "text": m["text"], "sentiment": "negative", "topics": ["bug"]}
    ]


async def test_one_departments_status_priority_and_overdue_lists_page_through_its_assignments(
    api: httpx.AsyncClient,
) -> None:
    # Those lists read the department's assignments in the mentions' order (migration 0008) instead of
    # walking the mentions: they must give exactly what filtering the department's whole list gives, in
    # the same order, page by page, both ways, with mention filters on top, and after a reassignment
    # (the opened assignment carries its mention's routing time).
    newest = (await api.get("/v1/mentions", params={"department": "support", "limit": 1})).json()["items"][0]
    moved = next(a["id"] for a in newest["assignments"] if a["department"] == "support")
    r = await api.post(f"/v1/assignments/{moved}/reassign", json={"department": "product"})
    assert r.status_code == 200, r.text
    for department in ("support", "product", "rnd", "pr", "marketing"):
        everything = await _all(api, department=department)
        assert everything, department
        cases: list[tuple[dict[str, Any], Any]] = [
            ({"status": "new"}, lambda a: a["status"] == "new"),
            ({"status": "reassigned"}, lambda a: a["status"] == "reassigned"),
            ({"overdue": "true"}, lambda a: a["overdue"]),
            *(({"priority": p}, lambda a, p=p: a["priority"] == p) for p in ("P1", "P2", "P3", "P4")),
        ]
        for params, keep in cases:
            want = [
                m["id"]
                for m in everything
                if any(a["department"] == department and keep(a) for a in m["assignments"])
            ]
            got = await _all(api, department=department, **params)
            assert [m["id"] for m in got] == want, (department, params)
            oldest = await _all(api, department=department, sort="routed_at", **params)
            assert [m["id"] for m in oldest] == want[::-1], (department, params)
            security = await _all(api, department=department, topic="security", **params)
            assert [m["id"] for m in security] == [
                m["id"] for m in everything if m["id"] in set(want) and "security" in m["topics"]
            ], (department, params)
    product_new = [m["id"] for m in await _all(api, department="product", status="new")]
    assert newest["id"] in product_new


async def test_sparse_filters_read_through_the_assignments_give_the_walks_answer(
    api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filter on an assignment attribute in several departments reads the matching assignments when the
    kept counts say they are few (services/api/queries/mentions.py SPARSE_ASSIGNMENTS), else walks the
    mentions: both give the same pages, in both orders, with cursors, with mention filters beside."""
    from services.api.queries import mentions as queries

    filters: list[dict[str, Any]] = [
        {"status": "new"},
        {"priority": "P1"},
        {"priority": ["P1", "P2"], "department": ["support", "pr"]},
        {"overdue": "true"},
        {"status": "new", "topic": "bug"},
        {"status": "new", "sentiment": "negative", "sort": "routed_at"},
        {"priority": "P2", "sort": "routed_at"},
    ]
    for params in filters:
        monkeypatch.setattr(queries, "SPARSE_ASSIGNMENTS", 10**9)
        through_assignments = await _all(api, **params)
        monkeypatch.setattr(queries, "SPARSE_ASSIGNMENTS", -1)
        walked = await _all(api, **params)
        assert [m["id"] for m in through_assignments] == [m["id"] for m in walked], params
        assert walked, params
        assert len({m["id"] for m in walked}) == len(walked), params  # each mention once
