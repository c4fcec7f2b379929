"""The end-to-end scenario shared by the multi-process and the embedded runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from devsupport.factories import Entry, atom, make_entries, rss
from devsupport.feedserver import FeedServer
from shared.events import mention_id


@dataclass
class Feed:
    path: str
    kind: str
    entries: list[Entry]
    source_id: str = ""


def serve_feeds(server: FeedServer, *, feeds: int, per_feed: int) -> list[Feed]:
    """`feeds` feeds of `per_feed` entries: RSS blogs, one Atom feed, the last one a comment feed."""
    out = []
    for i in range(feeds):
        entries = make_entries(per_feed, prefix=f"feed{i}", seed=i)
        kind = "comments" if i == feeds - 1 else "feed"
        body = atom(entries, title=f"Feed {i}") if i % 2 else rss(entries, title=f"Feed {i}")
        path = f"/feeds/{i}.xml"
        # Feed 0 never answers 304, so its re-polls go through the seen-entry check instead.
        server.serve(
            path,
            body,
            content_type="application/atom+xml" if i % 2 else "application/rss+xml",
            conditional=i != 0,
        )
        out.append(Feed(path=path, kind=kind, entries=entries))
    return out


async def register_sources(api: httpx.AsyncClient, server: FeedServer, feeds: list[Feed]) -> None:
    for i, feed in enumerate(feeds):
        response = await api.post(
            "/v1/sources",
            json={
                "name": f"Test feed {i}",
                "url": server.url(feed.path),
                "kind": feed.kind,
                "influence": 1,
                "poll_interval_seconds": 1,
            },
        )
        assert response.status_code == 201, response.text
        feed.source_id = response.json()["id"]


def expected_assignments(feeds: list[Feed]) -> dict[str, frozenset[str]]:
    return {mention_id(f.source_id, e.guid): e.departments for f in feeds for e in f.entries}


async def wait_for(
    check: Callable[[], Awaitable[bool]], *, within: float, what: str, interval: float = 0.5
) -> None:
    deadline = time.monotonic() + within
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


async def api_mentions(api: httpx.AsyncClient, **params: str) -> list[dict[str, object]]:
    """Every mention the API lists, following the cursor."""
    items: list[dict[str, object]] = []
    cursor: str | None = None
    while True:
        query = {"limit": "200", **params}
        if cursor:
            query["cursor"] = cursor
        response = await api.get("/v1/mentions", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return items


async def assert_api_agrees(api: httpx.AsyncClient, expected: dict[str, frozenset[str]]) -> None:
    listed = await api_mentions(api)
    ids = [str(m["id"]) for m in listed]
    assert len(ids) == len(set(ids)), "the API listed a mention twice"
    assert set(ids) == set(expected)
    for m in listed:
        departments = {a["department"] for a in m["assignments"]}  # type: ignore[attr-defined]
        assert departments == expected[str(m["id"])], m["title"]
    queues = (await api.get("/v1/queues")).json()
    totals = {q["department"]: q["total"] for q in queues["departments"]}
    for department in ("marketing", "pr", "support", "rnd", "product"):
        assert totals[department] == sum(department in d for d in expected.values()), department
    some = next(iter(expected))
    detail = await api.get(f"/v1/mentions/{some}")
    assert detail.status_code == 200
    assert detail.json()["classification"]["engine"] == "rules"
    assert (await api.get("/v1/mentions/does-not-exist")).status_code == 404
