"""Keys and scopes on a real PostgreSQL: every endpoint under every kind of key (table-driven, and the table
must cover every route the app has), data filtered to the key's departments, problem+json errors, rate
limits, size limits, revocation, and the key itself never stored or logged."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import select

from bench.infra import create_database, drop_database
from devsupport.apiclient import api_client
from devsupport.factories import TEMPLATES, classified_event
from devsupport.processes import free_port
from services.router.service import RouterService
from shared.apikeys import create_key
from shared.bus import MemoryBus, Record
from shared.bus.codec import encode
from shared.db import AlertRow, ApiKeyRow, AssignmentRow, create_engine, migrate, session_factory
from shared.events import utcnow
from shared.routing import RuleSet
from shared.settings import BusKind, Settings

pytestmark = pytest.mark.postgres

SCOPES = {
    "admin": ["admin"],
    "support_rw": ["write:support"],
    "support_ro": ["read:support"],
    "pr_rw": ["write:pr"],
    "pusher": ["push"],
}


def _template(departments: frozenset[str]) -> int:
    return next(i for i, t in enumerate(TEMPLATES) if t[2] == departments)


@dataclass
class Env:
    client: httpx.AsyncClient
    keys: dict[str, str]
    ids: dict[str, Any]
    settings: Settings
    app: Any

    async def call(self, who: str | None, method: str, path: str, body: Any = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[who]}"} if who else {}
        return await self.client.request(method, path, json=body, headers=headers)


@pytest.fixture(scope="module")
async def env(postgres_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    # One database and app for the whole module (about fifty requests per key class): the cases are
    # written to hold whatever state the ones before them left.
    database = f"mr_test_security_{uuid.uuid4().hex[:8]}"
    pg_url = await create_database(postgres_server_url, database)
    await migrate(pg_url)
    taxonomy = tmp_path_factory.mktemp("security") / "taxonomy.yaml"
    shutil.copy(Settings().taxonomy_file, taxonomy)
    settings = Settings().model_copy(
        update={
            "database_url": pg_url,
            "taxonomy_file": taxonomy,
            "bus": BusKind.MEMORY,
            "api_auth": True,
            "api_rate_limit_per_s": 0,  # its own test below
            # Webhook endpoints on loopback only (a closed port: a ping fails fast and is logged).
            "webhook_allow_http": True,
            "webhook_allowed_networks": "127.0.0.1",
            "ingest_allowed_networks": "127.0.0.1",
        }
    )
    engine = create_engine(pg_url)
    sessions = session_factory(engine)
    router = RouterService(
        settings=settings, bus=MemoryBus(), sessions=sessions, rules=RuleSet.from_file(settings.routing_file)
    )
    await router.load_rules()
    support = _template(frozenset({"support"}))
    pr = _template(frozenset({"pr"}))
    events = [classified_event(i) for i in range(len(TEMPLATES) * 2)]
    messages = [encode(topic="t", key=e.mention.id, event=e, source="/t") for e in events]
    await router.handle(
        [Record(topic="t", partition=0, offset=n, key=m.key, value=m.value) for n, m in enumerate(messages)]
    )
    keys: dict[str, str] = {}
    async with sessions() as session:
        for name, scopes in SCOPES.items():
            keys[name] = (await create_key(session, name=name, scopes=scopes, created_by="test")).key
        keys["expired"] = (
            await create_key(
                session,
                name="old",
                scopes=["admin"],
                created_by="test",
                expires_at=utcnow() - timedelta(days=1),
            )
        ).key
        aid = {
            a.department: a.id
            for a in await session.scalars(
                select(AssignmentRow).where(
                    AssignmentRow.mention_id.in_([events[support].mention.id, events[pr].mention.id])
                )
            )
        }
        now = utcnow()
        alert = AlertRow(
            kind="spike",
            topic="how_to",
            department="support",
            window_start=now,
            window_end=now + timedelta(hours=1),
            count=9,
            baseline=0.5,
            stddev=0.5,
            baseline_hours=168,
            threshold=5.0,
            created_at=now,
            updated_at=now,
        )
        session.add(alert)
        await session.flush()
        support_alert = alert.id
        await session.commit()
    ids: dict[str, Any] = {
        "taxonomy": {"version": 3, "topics": yaml.safe_load(taxonomy.read_text())["topics"]},
        "support_mention": events[support].mention.id,
        "pr_mention": events[pr].mention.id,
        "support_assignment": aid["support"],
        "pr_assignment": aid["pr"],
        "support_alert": support_alert,
    }
    async with api_client(settings, engine=engine, bus=MemoryBus()) as c:
        ids["hook_url"] = f"http://127.0.0.1:{free_port()}/hook"
        for name in ("support_webhook", "support_webhook_2"):
            made = await c.post(
                "/v1/webhooks",
                json={"department": "support", "url": ids["hook_url"]},
                headers={"Authorization": f"Bearer {keys['admin']}"},
            )
            assert made.status_code == 201, made.text
            ids[name] = made.json()["id"]
        yield Env(c, keys, ids, settings, c.app)
    await engine.dispose()
    await drop_database(postgres_server_url, database)


# Outcome classes: "ok" = allowed (any status below 400, or a 409/422 the resource's own state explains);
# 401, 403, 404 as such.
OK = "ok"
ALL_KEYS = ("admin", "support_rw", "support_ro", "pr_rw", "pusher")


def everyone(outcome: str = OK) -> dict[str, str]:
    return dict.fromkeys(ALL_KEYS, outcome)


def admin_only() -> dict[str, str]:
    return {"admin": OK, "support_rw": "403", "support_ro": "403", "pr_rw": "403", "pusher": "403"}


def support_read() -> dict[str, str]:
    """A support mention or assignment, read."""
    return {"admin": OK, "support_rw": OK, "support_ro": OK, "pr_rw": "404", "pusher": "404"}


def support_write() -> dict[str, str]:
    return {"admin": OK, "support_rw": OK, "support_ro": "403", "pr_rw": "404", "pusher": "404"}


def support_write_new() -> dict[str, str]:
    """Making something for support: keys that cannot write support get 403 (there is nothing to hide)."""
    return {"admin": OK, "support_rw": OK, "support_ro": "403", "pr_rw": "403", "pusher": "403"}


RULES = {
    "fallback": {"department": "marketing"},
    "rules": [{"name": "r", "when": {}, "route": [{"department": "pr"}]}],
}
PUSH = {"source": "mastodon", "url": "https://social.example/@d/1", "text": "Tessellate crashed again"}

# (method, path, body, expected outcome per key). Public routes: every caller, no key needed.
TABLE: list[tuple[str, str, Any, dict[str, str]]] = [
    ("GET", "/healthz", None, everyone()),
    ("GET", "/readyz", None, everyone()),
    ("GET", "/asyncapi.json", None, everyone()),
    ("GET", "/v1/schemas", None, everyone()),
    ("GET", "/v1/schemas/MentionRouted", None, everyone()),
    ("GET", "/v1/mentions", None, everyone()),
    ("GET", "/v1/mentions?department=pr", None, {**everyone("403"), "admin": OK, "pr_rw": OK}),
    ("GET", "/v1/mentions/export?format=csv", None, everyone()),
    ("GET", "/v1/mentions/{support_mention}", None, support_read()),
    ("GET", "/v1/mentions/{pr_mention}", None, {**everyone("404"), "admin": OK, "pr_rw": OK}),
    ("GET", "/v1/mentions/{support_mention}/activity", None, support_read()),
    ("GET", "/v1/mentions/{support_mention}/thread", None, support_read()),
    ("GET", "/v1/mentions/{pr_mention}/thread", None, {**everyone("404"), "admin": OK, "pr_rw": OK}),
    ("GET", "/v1/mentions/{support_mention}/near-duplicates", None, support_read()),
    ("POST", "/v1/mentions/{support_mention}/corrections", {"sentiment": "negative"}, support_write()),
    ("POST", "/v1/mentions", PUSH, {**everyone("403"), "admin": OK, "pusher": OK}),
    ("GET", "/v1/queues", None, everyone()),
    ("GET", "/v1/assignments/{support_assignment}", None, support_read()),
    ("POST", "/v1/assignments/{support_assignment}/acknowledge", None, support_write()),
    ("POST", "/v1/assignments/{support_assignment}/respond", {"text": "Thanks!"}, support_write()),
    ("POST", "/v1/assignments/{support_assignment}/resolve", None, support_write()),
    ("POST", "/v1/assignments/{support_assignment}/dismiss", None, support_write()),
    ("POST", "/v1/assignments/{support_assignment}/reopen", None, support_write()),
    ("POST", "/v1/assignments/{support_assignment}/claim", {}, support_write()),
    ("POST", "/v1/assignments/{support_assignment}/unclaim", {"force": True}, support_write()),
    ("POST", "/v1/assignments/{support_assignment}/notes", {"text": "n"}, support_write()),
    (
        "POST",
        "/v1/assignments/{pr_assignment}/reassign",
        {"department": "marketing"},
        {**everyone("404"), "admin": OK, "pr_rw": OK},
    ),
    ("GET", "/v1/sources", None, everyone()),
    ("POST", "/v1/sources", {"name": "n", "url": "https://93.184.215.14/feed"}, admin_only()),
    ("GET", "/v1/sources/nope", None, everyone("404")),
    ("PATCH", "/v1/sources/nope", {"enabled": False}, {**admin_only(), "admin": "404"}),
    ("DELETE", "/v1/sources/nope", None, {**admin_only(), "admin": "404"}),
    ("GET", "/v1/routing-rules", None, everyone()),
    ("GET", "/v1/routing-rules/versions", None, everyone()),
    ("GET", "/v1/routing-rules/versions/1", None, everyone()),
    ("POST", "/v1/routing-rules/versions", {"rules": RULES}, admin_only()),
    ("POST", "/v1/routing-rules/versions/1/activate", None, admin_only()),
    ("GET", "/v1/routing-rules/audit", None, admin_only()),
    ("GET", "/v1/routing-rules/accuracy", None, everyone()),
    ("POST", "/v1/routing-rules/test", {"mention": {"text": "security hole"}}, everyone()),
    (
        "POST",
        "/v1/routing-rules/test",
        {"mention_id": "{pr_mention}"},
        {**everyone("404"), "admin": OK, "pr_rw": OK},
    ),
    ("POST", "/v1/routing-rules/replay", {"rules": RULES}, admin_only()),
    ("GET", "/v1/stats/mentions", None, everyone()),
    ("GET", "/v1/alerts", None, everyone()),
    ("POST", "/v1/alerts/999999/acknowledge", None, {**everyone("404"), "pusher": "404"}),
    ("POST", "/v1/webhooks", {"department": "support", "url": "{hook_url}"}, support_write_new()),
    ("GET", "/v1/webhooks", None, everyone()),
    ("GET", "/v1/webhooks/{support_webhook}", None, support_read()),
    ("PATCH", "/v1/webhooks/{support_webhook}", {"description": "d"}, support_write()),
    ("POST", "/v1/webhooks/{support_webhook}/rotate-secret", None, support_write()),
    ("POST", "/v1/webhooks/{support_webhook}/test", None, support_write()),
    ("GET", "/v1/webhooks/{support_webhook}/deliveries", None, support_read()),
    (
        "GET",
        "/v1/webhooks/{support_webhook}/deliveries/999999",
        None,
        {**support_read(), "admin": "404", "support_rw": "404", "support_ro": "404"},
    ),
    (
        "POST",
        "/v1/webhooks/{support_webhook}/deliveries/999999/retry",
        None,
        {**support_write(), "admin": "404", "support_rw": "404"},
    ),
    # Called in this order: the read-only and foreign keys first, then the writer deletes it.
    (
        "DELETE",
        "/v1/webhooks/{support_webhook_2}",
        None,
        {"support_ro": "403", "pr_rw": "404", "pusher": "404", "support_rw": OK, "admin": "404"},
    ),
    ("GET", "/v1/taxonomy", None, everyone()),
    ("PUT", "/v1/taxonomy", "{taxonomy}", admin_only()),
    # A stream never ends: an id of another stream (422 once the key may read support) keeps it short.
    (
        "GET",
        "/v1/stream?department=support&last_event_id=pr:0.1",
        None,
        {**support_read(), "pr_rw": "403", "pusher": "403"},
    ),
    ("GET", "/v1/stats/mentions", None, everyone()),
    ("GET", "/v1/stats/mentions?department=pr", None, {**everyone("403"), "admin": OK, "pr_rw": OK}),
    ("GET", "/v1/alerts", None, everyone()),
    ("POST", "/v1/alerts/{support_alert}/acknowledge", None, support_write()),
    ("GET", "/v1/keys", None, admin_only()),
    ("GET", "/v1/keys/me", None, everyone()),
    ("POST", "/v1/keys", {"name": "k", "scopes": ["read:pr"]}, admin_only()),
    ("DELETE", "/v1/keys/nope", None, {**admin_only(), "admin": "404"}),
]
PUBLIC = {
    "/healthz",
    "/readyz",
    "/asyncapi.json",
    "/v1/schemas",
    "/v1/schemas/{name}",
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
}


def _fill(value: Any, ids: dict[str, Any]) -> Any:
    if isinstance(value, str) and value.startswith("{") and value.endswith("}") and value[1:-1] in ids:
        return ids[value[1:-1]]
    if isinstance(value, str):
        for name, v in ids.items():
            value = value.replace("{" + name + "}", str(v))
        return value
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value


def _outcome(response: httpx.Response) -> str:
    if response.status_code in (401, 403, 404):
        return str(response.status_code)
    assert response.status_code < 500, response.text
    return OK


async def test_every_route_is_in_the_table(env: Env) -> None:
    document = (await env.client.get("/openapi.json")).json()
    routes = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if path not in PUBLIC and not path.startswith("/v1/schemas")
    }
    assert len(routes) > 40, "the document lists the API's operations"
    templated = {
        (
            method,
            path.split("?")[0]
            .replace("{support_mention}", "{mention_id}")
            .replace("{pr_mention}", "{mention_id}")
            .replace("{support_assignment}", "{assignment_id}")
            .replace("{support_webhook}", "{webhook_id}")
            .replace("{support_webhook_2}", "{webhook_id}")
            .replace("/deliveries/999999", "/deliveries/{delivery_id}")
            .replace("/alerts/999999", "/alerts/{alert_id}")
            .replace("{pr_assignment}", "{assignment_id}")
            .replace("{support_alert}", "{alert_id}")
            .replace("/nope", "/{source_id}" if path.startswith("/v1/sources") else "/{key_id}")
            .replace("/versions/1", "/versions/{version}"),
        )
        for method, path, _, _ in TABLE
    }
    missing = sorted(routes - templated)
    assert not missing, f"routes without a row in TABLE (add one per scope): {missing}"


@pytest.mark.parametrize(
    ("method", "path", "body", "expected"), TABLE, ids=[f"{m} {p}" for m, p, _, _ in TABLE]
)
async def test_every_endpoint_under_every_scope(
    env: Env, method: str, path: str, body: Any, expected: dict[str, str]
) -> None:
    url, payload = _fill(path, env.ids), _fill(body, env.ids)
    public = path.split("?")[0] in PUBLIC or path.startswith("/v1/schemas")
    anonymous = await env.call(None, method, url, payload)
    if public:
        assert anonymous.status_code == 200, anonymous.text
    else:
        assert anonymous.status_code == 401, anonymous.text
        assert anonymous.headers["www-authenticate"] == "Bearer"
        assert anonymous.headers["content-type"] == "application/problem+json"
        assert (await env.call("expired", method, url, payload)).status_code == 401
    got = {who: _outcome(await env.call(who, method, url, payload)) for who in expected}
    assert got == expected


async def test_listings_hold_only_the_keys_departments(env: Env) -> None:
    items = (await env.call("support_ro", "GET", "/v1/mentions?limit=200")).json()["items"]
    assert items
    for m in items:
        assert [a["department"] for a in m["assignments"]] == ["support"], "only support's assignments"
    every = (await env.call("admin", "GET", "/v1/mentions?limit=200")).json()["items"]
    with_support = [m for m in every if any(a["department"] == "support" for a in m["assignments"])]
    assert {m["id"] for m in items} == {m["id"] for m in with_support}
    queues = (await env.call("support_ro", "GET", "/v1/queues")).json()["departments"]
    assert [q["department"] for q in queues] == ["support"]
    export = (await env.call("support_ro", "GET", "/v1/mentions/export?format=ndjson")).text.splitlines()
    assert len(export) == len(items)


async def test_errors_are_problem_details_without_internals(env: Env) -> None:
    r = await env.call("admin", "GET", "/v1/mentions?limit=0")
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert (body["type"], body["title"], body["status"]) == ("about:blank", "Unprocessable Entity", 422)
    assert body["errors"][0]["location"] == "query.limit"
    r = await env.call("admin", "GET", "/v1/mentions/nope")
    assert r.status_code == 404 and r.json()["detail"] == "mention 'nope' not found"
    await env.call("admin", "POST", f"/v1/assignments/{env.ids['support_assignment']}/resolve")
    conflict = await env.call("admin", "POST", f"/v1/assignments/{env.ids['support_assignment']}/acknowledge")
    assert conflict.status_code == 409 and conflict.headers["content-type"] == "application/problem+json"
    stale = await env.client.post(
        f"/v1/assignments/{env.ids['support_assignment']}/acknowledge",
        headers={
            "Authorization": f"Bearer {env.keys['admin']}",
            "If-Match": f'"{env.ids["support_assignment"]}-99"',
        },
    )
    assert stale.status_code == 412 and stale.json()["status"] == 412
    assert "Traceback" not in r.text


async def test_request_bodies_above_the_limit_are_refused(env: Env) -> None:
    big = "x" * (env.settings.api_max_body_bytes + 1)
    r = await env.client.post(
        "/v1/mentions",
        content=big.encode(),
        headers={"Authorization": f"Bearer {env.keys['pusher']}", "content-type": "application/json"},
    )
    assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json"


async def test_rate_limit_answers_429_with_retry_after(env: Env) -> None:
    guard = env.app.state.guard
    guard.settings = env.settings.model_copy(update={"api_rate_limit_per_s": 1.0, "api_rate_limit_burst": 3})
    try:
        codes = [(await env.call("support_ro", "GET", "/v1/queues")).status_code for _ in range(5)]
        assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
        limited = await env.call("support_ro", "GET", "/v1/queues")
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.headers["content-type"] == "application/problem+json"
        # Another key has its own bucket.
        assert (await env.call("admin", "GET", "/v1/queues")).status_code == 200
    finally:
        guard.settings = env.settings
        guard._buckets.clear()


async def test_keys_are_stored_hashed_shown_once_and_revocable(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    made = await env.call("admin", "POST", "/v1/keys", {"name": "helpdesk", "scopes": ["write:support"]})
    assert made.status_code == 201
    key, key_id = made.json()["key"], made.json()["id"]
    assert "key" not in (await env.call("admin", "GET", "/v1/keys")).json()["items"][0]
    engine = create_engine(env.settings.database_url)
    async with session_factory(engine)() as session:
        row = await session.get(ApiKeyRow, key_id)
        assert row is not None and key not in str(vars(row))
        assert row.secret_hash == hashlib.sha256(key.split("_", 2)[2].encode()).hexdigest()
    await engine.dispose()
    headers = {"Authorization": f"Bearer {key}"}
    assert (await env.client.get("/v1/queues", headers=headers)).status_code == 200
    deleted = await env.call("admin", "DELETE", f"/v1/keys/{key_id}")
    assert deleted.status_code == 204, deleted.text
    # Refused at once by the process that revoked it, although it had just found the key valid.
    assert (await env.client.get("/v1/queues", headers=headers)).status_code == 401
    bad = await env.call("admin", "POST", "/v1/keys", {"name": "x", "scopes": ["read:legal"]})
    assert bad.status_code == 422
    assert key not in caplog.text and key.split("_", 2)[2] not in caplog.text


async def test_cors_is_off_by_default_and_follows_the_setting(pg_url: str) -> None:
    async def preflight(origins: list[str]) -> httpx.Response:
        settings = Settings().model_copy(update={"database_url": pg_url, "api_cors_origins": origins})
        async with api_client(settings, base_url="http://a") as c:
            return await c.options(
                "/v1/mentions",
                headers={"Origin": "https://tools.example.com", "Access-Control-Request-Method": "GET"},
            )

    off = await preflight([])
    assert "access-control-allow-origin" not in off.headers
    on = await preflight(["https://tools.example.com"])
    assert on.headers["access-control-allow-origin"] == "https://tools.example.com"
    other = await preflight(["https://other.example.com"])
    assert "access-control-allow-origin" not in other.headers


# --- who did it: the key on every record, revocation, idempotency, scoped details ----------------------


def _key_ref(env: Env, name: str) -> dict[str, str]:
    """How the API reports the key `name` of SCOPES acting: its id and name."""
    return {"id": env.keys[name].split("_")[1], "name": name}


async def test_the_api_port_serves_no_metrics(env: Env) -> None:
    # They are on the metrics port only (tests/integration/test_metrics.py), with or without a key here.
    assert (await env.call(None, "GET", "/metrics")).status_code == 404
    assert (await env.call("admin", "GET", "/metrics")).status_code == 404


async def _as(env: Env, who: str, method: str, path: str, body: Any = None) -> httpx.Response:
    """A request by `who` that claims, through X-Actor, to be the admin."""
    headers = {"Authorization": f"Bearer {env.keys[who]}", "X-Actor": "admin"}
    response = await env.client.request(method, path, json=body, headers=headers)
    assert response.status_code < 300, response.text
    return response


async def _note(env: Env, who: str) -> list[dict[str, Any]]:
    await _as(env, who, "POST", f"/v1/assignments/{env.ids['support_assignment']}/notes", {"text": "x"})
    log = await _as(env, who, "GET", f"/v1/mentions/{env.ids['support_mention']}/activity")
    return [log.json()["items"][-1]]


async def _correction(env: Env, who: str) -> list[dict[str, Any]]:
    made = await _as(
        env, who, "POST", f"/v1/mentions/{env.ids['support_mention']}/corrections", {"intent": "question"}
    )
    detail = await _as(env, who, "GET", f"/v1/mentions/{env.ids['support_mention']}")
    return [made.json()[0], detail.json()["corrections"][-1]]


async def _rule_version(env: Env, who: str) -> list[dict[str, Any]]:
    made = (await _as(env, who, "POST", "/v1/routing-rules/versions", {"rules": RULES})).json()
    audit = (await _as(env, who, "GET", "/v1/routing-rules/audit")).json()["items"][0]
    return [
        {"actor": made["created_by"], "actor_key": made["created_by_key"]},
        audit,
    ]


async def _activation(env: Env, who: str) -> list[dict[str, Any]]:
    active = (await _as(env, who, "GET", "/v1/routing-rules")).json()["version"]
    made = (await _as(env, who, "POST", "/v1/routing-rules/versions", {"rules": RULES})).json()["version"]
    done = (await _as(env, who, "POST", f"/v1/routing-rules/versions/{made}/activate")).json()
    audit = (await _as(env, who, "GET", "/v1/routing-rules/audit")).json()["items"][0]
    version = (await _as(env, who, "GET", f"/v1/routing-rules/versions/{made}")).json()
    await _as(env, who, "POST", f"/v1/routing-rules/versions/{active}/activate")  # as it was
    return [
        {"actor": done["activated_by"], "actor_key": done["activated_by_key"]},
        audit,
        {"actor": version["activated_by"], "actor_key": version["activated_by_key"]},
    ]


async def _new_key(env: Env, who: str) -> list[dict[str, Any]]:
    made = (await _as(env, who, "POST", "/v1/keys", {"name": "made", "scopes": ["read:pr"]})).json()
    listed = next(
        k for k in (await _as(env, who, "GET", "/v1/keys")).json()["items"] if k["id"] == made["id"]
    )
    return [{"actor": k["created_by"], "actor_key": k["created_by_key"]} for k in (made, listed)]


async def _alert(env: Env, who: str) -> list[dict[str, Any]]:
    engine = create_engine(env.settings.database_url)
    try:
        async with session_factory(engine)() as session:
            now = utcnow()
            row = AlertRow(
                kind="spike",
                topic="billing",
                department="support",
                window_start=now - timedelta(hours=2),
                window_end=now - timedelta(hours=1),
                count=9,
                baseline=0.5,
                stddev=0.5,
                baseline_hours=168,
                threshold=5.0,
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            await session.commit()
            alert_id = row.id
    finally:
        await engine.dispose()
    acked = (await _as(env, who, "POST", f"/v1/alerts/{alert_id}/acknowledge")).json()
    return [{"actor": acked["acknowledged_by"], "actor_key": acked["acknowledged_by_key"]}]


RECORDS = [
    ("activity", "support_rw", _note),
    ("correction", "support_rw", _correction),
    ("rule set created", "admin", _rule_version),
    ("rule set activated", "admin", _activation),
    ("key created", "admin", _new_key),
    ("alert acknowledged", "support_rw", _alert),
]


@pytest.mark.parametrize(("record", "who", "change"), RECORDS, ids=[r for r, _, _ in RECORDS])
async def test_records_name_the_key_that_made_the_change_beside_x_actor(
    env: Env, record: str, who: str, change: Any
) -> None:
    # X-Actor claims "admin": it is kept as the display name, and the key that authenticated is recorded
    # beside it, whatever the header says.
    for got in await change(env, who):
        assert (got["actor"], got["actor_key"]) == ("admin", _key_ref(env, who)), record


async def test_an_idempotency_key_belongs_to_the_api_key_that_sent_it(env: Env) -> None:
    other = (await env.call("admin", "POST", "/v1/keys", {"name": "pusher-2", "scopes": ["push"]})).json()
    idempotency = f"batch-{uuid.uuid4().hex}"

    async def push(key: str, body: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": idempotency}
        return await env.client.post("/v1/mentions", json=body, headers=headers)

    first = await push(env.keys["pusher"], PUSH)
    assert first.status_code == 202 and "idempotency-replayed" not in first.headers
    again = await push(env.keys["pusher"], PUSH)
    assert again.headers.get("idempotency-replayed") == "true" and again.json() == first.json()
    # Another key's same Idempotency-Key is a request of its own: processed, not the first key's answer.
    theirs = await push(other["key"], PUSH)
    assert theirs.status_code == 202 and "idempotency-replayed" not in theirs.headers
    elsewhere = {**PUSH, "url": "https://social.example/@d/2"}
    # ... and each key's reuse for another request is refused, for that key alone.
    assert (await push(other["key"], elsewhere)).status_code == 422
    assert (await push(env.keys["pusher"], elsewhere)).status_code == 422
    fresh = await env.client.post(
        "/v1/mentions",
        json=elsewhere,
        headers={"Authorization": f"Bearer {other['key']}", "Idempotency-Key": idempotency + "-b"},
    )
    assert fresh.status_code == 202 and fresh.json()["ids"] != first.json()["ids"]


async def test_a_department_key_sees_only_its_departments_in_a_mention(env: Env) -> None:
    listed = (await env.call("admin", "GET", "/v1/mentions?department=support&limit=200")).json()["items"]
    shared = next(m for m in listed if {a["department"] for a in m["assignments"]} == {"support", "rnd"})
    path = f"/v1/mentions/{shared['id']}"
    rnd = (await env.call("admin", "POST", "/v1/keys", {"name": "rnd-desk", "scopes": ["write:rnd"]})).json()
    rnd_headers = {"Authorization": f"Bearer {rnd['key']}"}
    rnd_assignment = next(a["id"] for a in shared["assignments"] if a["department"] == "rnd")
    # R&D corrects a label and hands its part to product: R&D's business, and product's.
    made = await env.client.post(f"{path}/corrections", json={"intent": "complaint"}, headers=rnd_headers)
    assert made.status_code == 201, made.text
    moved = await env.client.post(
        f"/v1/assignments/{rnd_assignment}/reassign", json={"department": "product"}, headers=rnd_headers
    )
    assert moved.status_code == 200, moved.text
    # Support corrects a label too: its own.
    assert (
        await env.call("support_rw", "POST", f"{path}/corrections", {"sentiment": "negative"})
    ).status_code == 201

    admin = (await env.call("admin", "GET", path)).json()
    support = (await env.call("support_ro", "GET", path)).json()
    assert [(c["field"], c["actor_key"]["name"]) for c in admin["corrections"]] == [
        ("intent", "rnd-desk"),
        ("departments", "rnd-desk"),
        ("sentiment", "support_rw"),
    ]
    assert next(c for c in admin["corrections"] if c["field"] == "departments")["previous"] == [
        "rnd",
        "support",
    ]
    assert [(c["field"], c["actor_key"]["name"]) for c in support["corrections"]] == [
        ("sentiment", "support_rw")
    ]
    assert (await env.call("pr_rw", "GET", path)).status_code == 404

    # Support now hands its part to marketing: support sees that change, cut to its own department.
    support_assignment = next(a["id"] for a in shared["assignments"] if a["department"] == "support")
    await env.call(
        "support_rw", "POST", f"/v1/assignments/{support_assignment}/reassign", {"department": "marketing"}
    )
    seen = (await env.call("support_ro", "GET", path)).json()["corrections"][-1]
    assert (seen["field"], seen["previous"], seen["value"]) == ("departments", ["support"], [])
    full = (await env.call("admin", "GET", path)).json()["corrections"][-1]
    assert (full["previous"], sorted(full["value"])) == (["product", "support"], ["marketing", "product"])


async def test_a_department_key_sees_only_the_rules_that_routed_its_departments(env: Env) -> None:
    listed = (await env.call("support_ro", "GET", "/v1/mentions?limit=200")).json()["items"]
    hidden = 0
    for m in listed:
        mine = (await env.call("support_ro", "GET", f"/v1/mentions/{m['id']}")).json()
        every = (await env.call("admin", "GET", f"/v1/mentions/{m['id']}")).json()
        routed_support = {r for a in mine["assignments"] for r in a["rules"]}
        assert set(mine["matched_rules"]) <= routed_support, m["id"]
        assert mine["matched_rules"] == [r for r in every["matched_rules"] if r in routed_support]
        hidden += len(every["matched_rules"]) - len(mine["matched_rules"])
    assert hidden, "no mention here matched a rule that routed only another department"


async def test_a_revocation_reaches_other_api_processes_within_the_key_cache(pg_url: str) -> None:
    """Two API processes on one database: the one that revokes refuses the key at once, the other once
    its cached entry runs out (`MR_API_KEY_CACHE_S`, docs/operations.md); its clock is the test's."""
    settings = Settings().model_copy(
        update={"database_url": pg_url, "bus": BusKind.MEMORY, "api_auth": True, "metrics_port": 0}
    )
    engine = create_engine(pg_url)
    async with session_factory(engine)() as session:
        admin = (await create_key(session, name="ops", scopes=["admin"], created_by="test")).key
        made = await create_key(session, name="desk", scopes=["read:support"], created_by="test")
        await session.commit()
    await engine.dispose()
    async with (
        api_client(settings, base_url="http://one") as a,
        api_client(settings, base_url="http://two") as b,
    ):
        clock = [1000.0]
        b.app.state.guard.clock = lambda: clock[0]
        desk = {"Authorization": f"Bearer {made.key}"}
        assert (await a.get("/v1/queues", headers=desk)).status_code == 200
        assert (await b.get("/v1/queues", headers=desk)).status_code == 200
        revoked = await a.delete(f"/v1/keys/{made.row.id}", headers={"Authorization": f"Bearer {admin}"})
        assert revoked.status_code == 204
        assert (await a.get("/v1/queues", headers=desk)).status_code == 401
        # The documented delay: the other process still trusts its cached entry...
        assert (await b.get("/v1/queues", headers=desk)).status_code == 200
        clock[0] += settings.api_key_cache_s - 0.1
        assert (await b.get("/v1/queues", headers=desk)).status_code == 200
        # ... until it runs out, MR_API_KEY_CACHE_S after it was filled.
        clock[0] += 0.1
        assert (await b.get("/v1/queues", headers=desk)).status_code == 401


async def test_a_cached_key_is_not_trusted_past_its_expiry(pg_url: str) -> None:
    settings = Settings().model_copy(
        update={
            "database_url": pg_url,
            "bus": BusKind.MEMORY,
            "api_auth": True,
            "metrics_port": 0,
            "api_key_cache_s": 300,
        }
    )
    lifetime = timedelta(seconds=6)  # long enough to be used once before it expires, on a busy machine
    engine = create_engine(pg_url)
    async with session_factory(engine)() as session:
        made = await create_key(
            session, name="brief", scopes=["read:pr"], created_by="test", expires_at=utcnow() + lifetime
        )
        await session.commit()
    await engine.dispose()
    async with api_client(settings, base_url="http://a") as c:
        headers = {"Authorization": f"Bearer {made.key}"}
        assert (await c.get("/v1/queues", headers=headers)).status_code == 200
        assert made.row.expires_at is not None
        await asyncio.sleep(max(0.0, (made.row.expires_at - utcnow()).total_seconds()) + 0.2)
        assert (await c.get("/v1/queues", headers=headers)).status_code == 401
