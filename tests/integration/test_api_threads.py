"""A mention's thread and near-duplicates (services/api/threads.py) and what a key learns about itself
(GET /v1/keys/me), on PostgreSQL and SQLite, with mentions stored by the router's own code and keys on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import text

from devsupport.apiclient import api_client
from devsupport.factories import TEMPLATES, _engine
from services.router.service import RouterService
from shared.apikeys import create_key
from shared.bus import MemoryBus, Record
from shared.bus.codec import encode
from shared.db import create_engine, session_factory
from shared.events import Mention, MentionClassified, MentionKind, mention_id
from shared.routing import RuleSet
from shared.settings import BusKind, Settings

POST_URL = "https://blog.example.net/2026/11/exporting"
T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def _template(departments: set[str]) -> tuple[str, str]:
    title, body, _ = next(t for t in TEMPLATES if t[2] == frozenset(departments))
    return title, body


def _event(name: str, departments: set[str], minute: int, **fields: object) -> MentionClassified:
    title, body = _template(departments)
    values: dict[str, object] = {
        "id": mention_id("src-thread", name),
        "source_id": "src-thread",
        "source_name": "Thread source",
        "title": f"{title} ({name})",
        "text": body,
        "author": "Kofi Mensah",
        "url": f"https://blog.example.net/{name}",
        "published_at": T0 + timedelta(minutes=minute),
    }
    mention = Mention.model_validate(values | fields)
    return MentionClassified(mention=mention, ingested_at=T0, classification=_engine().classify(mention))


# name -> event: a post (support), three comments on it (support, pr, support), a copy of the post.
EVENTS = {
    "post": _event("post", {"support"}, 0, url=POST_URL),
    "c1": _event("c1", {"support"}, 1, kind=MentionKind.COMMENT, in_reply_to=POST_URL),
    "c2": _event("c2", {"pr"}, 2, kind=MentionKind.COMMENT, in_reply_to=POST_URL),
    "c3": _event("c3", {"support"}, 3, kind=MentionKind.COMMENT, in_reply_to=POST_URL),
    "copy": _event("copy", {"support"}, 4, near_duplicate_of=mention_id("src-thread", "post")),
}
ID = {name: e.mention.id for name, e in EVENTS.items()}


@dataclass
class Env:
    client: httpx.AsyncClient
    keys: dict[str, str]

    async def get(self, who: str, path: str) -> httpx.Response:
        return await self.client.get(path, headers={"Authorization": f"Bearer {self.keys[who]}"})


@pytest.fixture(params=["postgres", "sqlite"])
async def env(request: pytest.FixtureRequest, pg_url: str, sqlite_url: str) -> AsyncIterator[Env]:
    url = pg_url if request.param == "postgres" else sqlite_url
    settings = Settings().model_copy(update={"database_url": url, "bus": BusKind.MEMORY, "api_auth": True})
    engine = create_engine(url)
    sessions = session_factory(engine)
    router = RouterService(
        settings=settings, bus=MemoryBus(), sessions=sessions, rules=RuleSet.from_file(settings.routing_file)
    )
    for offset, event in enumerate(EVENTS.values()):
        m = encode(topic="t", key=event.mention.id, event=event, source="/t")
        await router.handle([Record(topic="t", partition=0, offset=offset, key=m.key, value=m.value)])
    keys: dict[str, str] = {}
    async with sessions() as session:
        for name, scopes in {"admin": ["admin"], "support": ["write:support"], "pr": ["read:pr"]}.items():
            keys[name] = (await create_key(session, name=name, scopes=scopes, created_by="test")).key
        await session.commit()
    async with api_client(settings, engine=engine, base_url="http://a") as client:
        yield Env(client, keys)
    await engine.dispose()


def _ids(items: list[dict[str, object]]) -> list[object]:
    return [i["id"] for i in items]


async def test_a_comments_thread_is_its_post_and_the_other_comments(env: Env) -> None:
    thread = (await env.get("admin", f"/v1/mentions/{ID['c1']}/thread")).json()
    assert thread["parent"]["id"] == ID["post"]
    assert _ids(thread["siblings"]) == [ID["c2"], ID["c3"]], "the other comments, oldest first"
    assert thread["replies"] == [] and thread["truncated"] is False
    assert thread["siblings"][0]["departments"] == ["pr"]
    assert thread["siblings"][0]["excerpt"] == EVENTS["c2"].mention.text[:280]

    post = (await env.get("admin", f"/v1/mentions/{ID['post']}/thread")).json()
    assert post["parent"] is None and post["siblings"] == []
    assert _ids(post["replies"]) == [ID["c1"], ID["c2"], ID["c3"]]
    cut = (await env.get("admin", f"/v1/mentions/{ID['post']}/thread?limit=2")).json()
    assert _ids(cut["replies"]) == [ID["c1"], ID["c2"]] and cut["truncated"] is True


async def test_a_department_key_sees_only_its_part_of_a_thread(env: Env) -> None:
    thread = (await env.get("support", f"/v1/mentions/{ID['c1']}/thread")).json()
    assert thread["parent"]["id"] == ID["post"]
    assert _ids(thread["siblings"]) == [ID["c3"]], "pr's comment is not support's business"
    post = (await env.get("support", f"/v1/mentions/{ID['post']}/thread")).json()
    assert _ids(post["replies"]) == [ID["c1"], ID["c3"]]
    assert (await env.get("support", f"/v1/mentions/{ID['c2']}/thread")).status_code == 404
    pr = (await env.get("pr", f"/v1/mentions/{ID['c2']}/thread")).json()
    assert pr["parent"] is None, "the post is support's"
    assert pr["siblings"] == []
    for who, name in (("pr", "post"), ("pr", "copy"), ("support", "nope")):
        r = await env.get(who, f"/v1/mentions/{ID.get(name, name)}/thread")
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"


async def test_near_duplicates_link_the_original_and_its_copies(env: Env) -> None:
    original = (await env.get("admin", f"/v1/mentions/{ID['post']}/near-duplicates")).json()
    assert original["original"] is None
    assert _ids(original["duplicates"]) == [ID["copy"]]
    assert original["duplicates"][0]["duplicate_of"] == ID["post"]
    assert original["duplicates"][0]["departments"] == [], "a copy is not routed"
    copy = (await env.get("admin", f"/v1/mentions/{ID['copy']}/near-duplicates")).json()
    assert copy["original"]["id"] == ID["post"] and copy["duplicates"] == []
    # A department that sees the original sees its copies; the copy alone it cannot open.
    support = (await env.get("support", f"/v1/mentions/{ID['post']}/near-duplicates")).json()
    assert _ids(support["duplicates"]) == [ID["copy"]]
    assert (await env.get("support", f"/v1/mentions/{ID['copy']}/near-duplicates")).status_code == 404
    assert (await env.get("pr", f"/v1/mentions/{ID['post']}/near-duplicates")).status_code == 404


async def test_a_key_learns_its_own_scopes(env: Env) -> None:
    admin = (await env.get("admin", "/v1/keys/me")).json()
    assert admin["admin"] is True and admin["push"] is True
    assert admin["read"] == admin["write"] == ["marketing", "pr", "support", "rnd", "product"]
    support = (await env.get("support", "/v1/keys/me")).json()
    assert (support["name"], support["scopes"], support["admin"], support["push"]) == (
        "support",
        ["write:support"],
        False,
        False,
    )
    assert (support["read"], support["write"]) == (["support"], ["support"])
    pr = (await env.get("pr", "/v1/keys/me")).json()
    assert (pr["read"], pr["write"]) == (["pr"], [])
    assert (await env.client.get("/v1/keys/me")).status_code == 401
    bad = await env.client.get("/v1/keys/me", headers={"Authorization": "Bearer mr_00000000_" + "x" * 30})
    assert bad.status_code == 401


@pytest.mark.postgres
async def test_the_thread_lookups_have_hash_indexes_on_postgres(pg_url: str) -> None:
    """Hash indexes: a B-tree entry is limited to about 2.7 kB, which a long URL outside ASCII exceeds
    (SQLite's are B-trees, checked against the models by test_migrations.py)."""
    engine = create_engine(pg_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'mentions'")
            )
            defs: dict[str, str] = {name: definition for name, definition in rows.all()}
    finally:
        await engine.dispose()
    assert "USING hash (url)" in defs["ix_mentions_url"]
    assert "USING hash (in_reply_to)" in defs["ix_mentions_in_reply_to"]
    assert "WHERE (in_reply_to IS NOT NULL)" in defs["ix_mentions_in_reply_to"]
