"""Conditional GETs of a mention, a list page and the queue statistics (services/api/conditional.py), on
PostgreSQL (where a conditional request reads only what decides it) and on SQLite: a copy that is current
gets a 304 without a body, and every change a caller would see — an assignment's transition, a reply, a
note, a label correction, an assignment becoming overdue, a new mention on the page — gives a new ETag and
a 200. Two keys that see different parts of a mention never share a tag."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from devsupport.apiclient import ApiClient, api_client
from devsupport.factories import TEMPLATES, classified_event
from services.api import conditional
from services.router.service import RouterService
from shared.apikeys import create_key
from shared.bus import MemoryBus, Record
from shared.bus.codec import encode
from shared.db import create_engine, session_factory
from shared.routing import RuleSet
from shared.settings import BusKind, Settings

N = len(TEMPLATES) * 2


class World:
    def __init__(
        self, api: ApiClient, router: RouterService, keys: dict[str, str], database: str = "postgres"
    ) -> None:
        self.api = api
        self.database = database
        self.router = router
        self.keys = keys
        self.offset = N

    async def route(self, i: int) -> str:
        e = classified_event(i)
        m = encode(topic="t", key=e.mention.id, event=e, source="/t")
        await self.router.handle(
            [Record(topic="t", partition=0, offset=self.offset, key=m.key, value=m.value)]
        )
        self.offset += 1
        return e.mention.id

    async def get(self, path: str, key: str = "admin", **headers: str) -> httpx.Response:
        return await self.api.get(path, headers={"Authorization": f"Bearer {self.keys[key]}", **headers})


@pytest.fixture(params=["postgres", "sqlite"])
async def world(request: pytest.FixtureRequest, pg_url: str, sqlite_url: str) -> AsyncIterator[World]:
    url = pg_url if request.param == "postgres" else sqlite_url
    settings = Settings().model_copy(
        update={"database_url": url, "bus": BusKind.MEMORY, "api_auth": True, "api_rate_limit_per_s": 0}
    )
    engine = create_engine(url)
    sessions = session_factory(engine)
    router = RouterService(
        settings=settings, bus=MemoryBus(), sessions=sessions, rules=RuleSet.from_file(settings.routing_file)
    )
    async with api_client(settings, engine=engine, base_url="http://a") as api:
        keys: dict[str, str] = {}
        async with sessions() as session:
            for name, scopes in {"admin": ["admin"], "support": ["write:support"], "pr": ["read:pr"]}.items():
                keys[name] = (await create_key(session, name=name, scopes=scopes, created_by="test")).key
            await session.commit()
        w = World(api, router, keys, request.param)
        for i in range(N):
            await w.route(i)
        yield w
    await engine.dispose()


async def _support_mention(w: World) -> tuple[str, int]:
    """A mention routed to support (and its support assignment's id)."""
    r = await w.get("/v1/mentions?department=support&limit=1")
    m = r.json()["items"][0]
    return m["id"], next(a["id"] for a in m["assignments"] if a["department"] == "support")


async def _revalidate(w: World, path: str, tag: str, key: str = "admin") -> httpx.Response:
    return await w.get(path, key, **{"If-None-Match": tag})


async def test_a_mention_is_not_modified_until_something_it_shows_changes(world: World) -> None:
    w = world
    mention_id, aid = await _support_mention(w)
    path = f"/v1/mentions/{mention_id}"
    first = await w.get(path)
    assert first.status_code == 200
    tag = first.headers["etag"]
    assert tag.startswith('W/"') and first.headers["cache-control"] == "private, no-cache"

    again = await _revalidate(w, path, tag)
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == tag
    # A list of tags, a strong form of the same tag and `*` match too; another tag does not.
    assert (await _revalidate(w, path, f'"x", {tag.removeprefix("W/")}')).status_code == 304
    assert (await _revalidate(w, path, "*")).status_code == 304
    assert (await _revalidate(w, path, 'W/"other"')).status_code == 200

    changes: list[tuple[str, dict[str, Any]]] = [
        (f"/v1/assignments/{aid}/acknowledge", {}),
        (f"/v1/assignments/{aid}/notes", {"text": "looking"}),
        (f"/v1/assignments/{aid}/respond", {"text": "Fixed in 2.1"}),
        (f"/v1/mentions/{mention_id}/corrections", {"sentiment": "negative"}),
    ]
    for change, body in changes:
        r = await w.api.post(change, json=body, headers={"Authorization": f"Bearer {w.keys['admin']}"})
        assert r.status_code in (200, 201), (change, r.text)
        stale = await _revalidate(w, path, tag)
        assert stale.status_code == 200, change
        assert stale.headers["etag"] != tag
        tag = stale.headers["etag"]
        # The tag of the full answer is the one a conditional request computes from the state alone.
        assert (await _revalidate(w, path, tag)).status_code == 304, change


async def test_the_tag_is_the_keys_view(world: World) -> None:
    w = world
    mention_id, _ = await _support_mention(w)
    path = f"/v1/mentions/{mention_id}"
    admin = (await w.get(path)).headers["etag"]
    support = (await w.get(path, "support")).headers["etag"]
    assert admin != support
    assert (await _revalidate(w, path, admin, "support")).status_code == 200
    assert (await _revalidate(w, path, support, "support")).status_code == 304
    # A key that cannot see the mention gets a 404 with or without a tag, never a 304.
    if "pr" not in {a["department"] for a in (await w.get(path)).json()["assignments"]}:
        assert (await _revalidate(w, path, "*", "pr")).status_code == 404


async def test_a_mention_turns_stale_when_its_assignment_becomes_overdue(world: World) -> None:
    w = world
    mention_id, _ = await _support_mention(w)
    path = f"/v1/mentions/{mention_id}"
    first = await w.get(path)
    due = min(datetime.fromisoformat(a["sla_due_at"]) for a in first.json()["assignments"])
    assert not any(a["overdue"] for a in first.json()["assignments"])
    late = due + timedelta(seconds=1)

    import services.api.mentions as mentions_route
    import services.api.revalidate as early_check

    real = mentions_route.utcnow
    mentions_route.utcnow = early_check.utcnow = lambda: late  # type: ignore[assignment]
    try:
        after = await _revalidate(w, path, first.headers["etag"])
    finally:
        mentions_route.utcnow = early_check.utcnow = real  # type: ignore[assignment]
    assert after.status_code == 200
    assert any(a["overdue"] for a in after.json()["assignments"])


async def test_if_modified_since(world: World) -> None:
    w = world
    mention_id, _ = await _support_mention(w)
    path = f"/v1/mentions/{mention_id}"
    # A Last-Modified in the current second is not sent (a later change in that second could not be
    # told apart): the mention was routed a moment ago, so ask once that second is over.
    await asyncio.sleep(1 - datetime.now(UTC).microsecond / 1e6 + 0.01)
    first = await w.get(path)
    modified = first.headers["last-modified"]
    assert (await w.get(path, **{"If-Modified-Since": modified})).status_code == 304
    earlier = format_datetime(datetime.now(UTC) - timedelta(days=30), usegmt=True)
    assert (await w.get(path, **{"If-Modified-Since": earlier})).status_code == 200
    assert (await w.get(path, **{"If-Modified-Since": "not a date"})).status_code == 200
    # If-None-Match decides when both are sent.
    later = format_datetime(datetime.now(UTC) + timedelta(days=1), usegmt=True)
    both = await w.get(path, **{"If-Modified-Since": later, "If-None-Match": 'W/"other"'})
    assert both.status_code == 200
    assert (await w.get(path, **{"If-Modified-Since": later})).status_code == 304


async def test_a_list_page_is_not_modified_until_its_mentions_change(world: World) -> None:
    w = world
    path = "/v1/mentions?department=support&limit=5"
    first = await w.get(path)
    tag = first.headers["etag"]
    assert (await _revalidate(w, path, tag)).status_code == 304
    # Another page, filter or key: another tag.
    assert (await _revalidate(w, "/v1/mentions?department=support&limit=4", tag)).status_code == 200
    assert (await _revalidate(w, path, tag, "support")).status_code == 200

    aid = first.json()["items"][2]["assignments"][0]["id"]
    r = await w.api.post(
        f"/v1/assignments/{aid}/claim",
        json={"assignee": "ana"},
        headers={"Authorization": f"Bearer {w.keys['admin']}"},
    )
    assert r.status_code == 200, r.text
    changed = await _revalidate(w, path, tag)
    assert changed.status_code == 200 and changed.headers["etag"] != tag
    tag = changed.headers["etag"]
    assert (await _revalidate(w, path, tag)).status_code == 304

    # A new mention routed to support comes first: the first page changes.
    support_template = next(i for i, t in enumerate(TEMPLATES) if "support" in t[2])
    await w.route(support_template + 7 * len(TEMPLATES))
    fresh = await _revalidate(w, path, tag)
    assert fresh.status_code == 200 and fresh.headers["etag"] != tag


async def test_queue_statistics_are_not_modified_until_a_figure_changes(world: World) -> None:
    w = world
    w.api.app.state.settings = w.api.app.state.settings.model_copy(update={"api_queue_stats_max_age_s": 0})
    first = await w.get("/v1/queues")
    assert first.status_code == 200
    body = first.json()
    assert datetime.fromisoformat(body["as_of"]) <= datetime.now(UTC)
    assert "last-modified" not in first.headers
    tag = first.headers["etag"]
    assert (await _revalidate(w, "/v1/queues", tag)).status_code == 304
    assert (await _revalidate(w, "/v1/queues", tag, "support")).status_code == 200
    assert (await _revalidate(w, "/v1/queues?window_hours=24", tag)).status_code == 200

    _, aid = await _support_mention(w)
    r = await w.api.post(
        f"/v1/assignments/{aid}/acknowledge", headers={"Authorization": f"Bearer {w.keys['admin']}"}
    )
    assert r.status_code == 200, r.text
    after = await _revalidate(w, "/v1/queues", tag)
    assert after.status_code == 200 and after.headers["etag"] != tag
    support = next(d for d in after.json()["departments"] if d["department"] == "support")
    before = next(d for d in body["departments"] if d["department"] == "support")
    assert support["by_status"].get("acknowledged", 0) == before["by_status"].get("acknowledged", 0) + 1


async def test_queue_counts_are_current_and_the_rest_is_read_once_per_step(world: World) -> None:
    """Within one step of MR_API_QUEUE_STATS_MAX_AGE_S the overdue counts and oldest assignments come from
    one snapshot (`as_of`, on the step's grid); the counts by status show a change at once."""
    w = world
    w.api.app.state.settings = w.api.app.state.settings.model_copy(update={"api_queue_stats_max_age_s": 300})
    first = (await w.get("/v1/queues")).json()
    _, aid = await _support_mention(w)
    r = await w.api.post(
        f"/v1/assignments/{aid}/acknowledge", headers={"Authorization": f"Bearer {w.keys['admin']}"}
    )
    assert r.status_code == 200
    second = (await w.get("/v1/queues")).json()
    assert datetime.fromisoformat(second["as_of"]).timestamp() % 300 == 0

    def support(body: dict[str, Any]) -> dict[str, Any]:
        return next(d for d in body["departments"] if d["department"] == "support")

    assert (
        support(second)["by_status"].get("acknowledged", 0)
        == support(first)["by_status"].get("acknowledged", 0) + 1
    )
    if first["as_of"] == second["as_of"]:  # the 300 s step did not end between the two requests
        assert support(second)["overdue"] == support(first)["overdue"]
        assert support(second)["oldest_open_age_s"] == support(first)["oldest_open_age_s"]


def _early(w: World) -> int:
    return int(getattr(w.api.app.state, "revalidated_early", 0))


async def test_a_current_copy_is_answered_in_front_of_the_framework(world: World) -> None:
    """On PostgreSQL the 304 of a mention and of the queue statistics comes from services/api/revalidate.py
    (the route never runs); on SQLite, and in every case the early check leaves alone, from the route:
    the same answer either way."""
    w = world
    mention_id, _ = await _support_mention(w)
    path = f"/v1/mentions/{mention_id}"
    first = await w.get(path)
    tag, queues_tag = first.headers["etag"], (await w.get("/v1/queues")).headers["etag"]
    before = _early(w)
    r = await _revalidate(w, path, tag)
    assert r.status_code == 304 and r.content == b""
    assert r.headers["etag"] == tag and r.headers["cache-control"] == conditional.CACHE_CONTROL
    assert (await _revalidate(w, "/v1/queues", queues_tag)).status_code == 304
    assert (await _revalidate(w, "/v1/queues?window_hours=168", queues_tag)).status_code == 304
    assert _early(w) == before + (3 if w.database == "postgres" else 0)

    # Left to the route, which answers each as before: a copy that is not current, a query the early
    # check does not read, a CORS request, a mention the key cannot see, a key it has not checked yet.
    before = _early(w)
    assert (await _revalidate(w, path, 'W/"old"')).status_code == 200
    assert (await _revalidate(w, "/v1/queues?window_hours=168&x=1", queues_tag)).status_code == 304
    assert (await w.get(path, **{"If-None-Match": tag, "Origin": "http://desk.example"})).status_code == 304
    assert (await _revalidate(w, "/v1/mentions/" + "0" * 32, "*")).status_code == 404
    created = await w.api.post(
        "/v1/keys",
        json={"name": "poller", "scopes": ["admin"]},
        headers={"Authorization": f"Bearer {w.keys['admin']}"},
    )
    w.keys["poller"] = created.json()["key"]
    assert (await _revalidate(w, path, tag, "poller")).status_code == 304
    assert _early(w) == before
    # Checked once by the route, the key is known to the early check; revoked, it is not.
    assert (await _revalidate(w, path, tag, "poller")).status_code == 304
    assert _early(w) == before + (1 if w.database == "postgres" else 0)
    revoked = await w.api.delete(
        f"/v1/keys/{created.json()['id']}", headers={"Authorization": f"Bearer {w.keys['admin']}"}
    )
    assert revoked.status_code == 204
    assert (await _revalidate(w, path, tag, "poller")).status_code == 401
    bad = await w.api.get(
        path, headers={"Authorization": "Bearer mr_00000000_" + "x" * 24, "If-None-Match": "*"}
    )
    assert bad.status_code == 401


async def test_a_stale_copy_is_read_once(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the early check read to find a copy stale is not read again by the route (one detail state,
    one set of queue figures per request), and the answer is the full one."""
    import services.api.queues as queues_route
    from services.api.queries import validators

    w = world
    calls: dict[str, int] = {"state": 0, "figures": 0}
    real_state, real_figures = validators.detail_state, queues_route.figures

    async def state(*args: Any) -> Any:
        calls["state"] += 1
        return await real_state(*args)

    async def figures(*args: Any) -> Any:
        calls["figures"] += 1
        return await real_figures(*args)

    monkeypatch.setattr(validators, "detail_state", state)
    monkeypatch.setattr(queues_route, "figures", figures)  # the route's reading, not the early check's
    mention_id, _ = await _support_mention(w)
    stale = await _revalidate(w, f"/v1/mentions/{mention_id}", 'W/"old"')
    assert stale.status_code == 200 and stale.json()["id"] == mention_id
    assert calls["state"] == 1
    queues = await _revalidate(w, "/v1/queues", 'W/"old"')
    assert queues.status_code == 200 and queues.json()["departments"]
    assert calls["figures"] == (0 if w.database == "postgres" else 1)


async def test_a_conditional_request_counts_once_against_the_rate_limit(world: World) -> None:
    w = world
    guard = w.api.app.state.guard
    guard.settings = guard.settings.model_copy(
        update={"api_rate_limit_per_s": 0.001, "api_rate_limit_burst": 3}
    )
    mention_id, _ = await _support_mention(w)  # the first of three
    path = f"/v1/mentions/{mention_id}"
    await w.get(path)  # the second
    # The third: the early check counts it, finds the copy stale and leaves it to the route.
    assert (await _revalidate(w, path, 'W/"old"')).status_code == 200
    refused = await _revalidate(w, path, 'W/"old"')
    assert refused.status_code == 429 and "retry-after" in refused.headers


def test_tags_differ_by_scope_and_parts() -> None:
    from shared.apikeys import ANONYMOUS_ADMIN, Principal

    support = Principal(key_id="k1", name="s", scopes=frozenset({"read:support"}))
    assert conditional.etag(ANONYMOUS_ADMIN, [1, "a"]) == conditional.etag(ANONYMOUS_ADMIN, [1, "a"])
    assert conditional.etag(ANONYMOUS_ADMIN, [1, "a"]) != conditional.etag(support, [1, "a"])
    assert conditional.etag(ANONYMOUS_ADMIN, [1, "a"]) != conditional.etag(ANONYMOUS_ADMIN, ["1a"])
