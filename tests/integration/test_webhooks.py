"""Outbound webhooks: routed mentions from the real Kafka topics, deliveries in the real PostgreSQL, POSTed to
a receiver on 127.0.0.1 (the stand-in for a department's endpoint)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from devsupport.apiclient import api_client
from devsupport.factories import TEMPLATES, classified_event
from devsupport.kafka import group_lag
from devsupport.processes import free_port
from devsupport.scenario import wait_for
from devsupport.webhook_receiver import WebhookReceiver, webhook_receiver
from services.api.webhook_worker.signing import verify
from services.router.service import RouterService
from shared.apikeys import create_key
from shared.bus import Bus, MemoryBus
from shared.bus.base import OutMessage, Record
from shared.bus.codec import encode
from shared.bus.kafka import KafkaBus
from shared.db import WebhookEndpointRow, create_engine, session_factory
from shared.events import Department, MentionEscalated, Priority, utcnow
from shared.routing import RuleSet
from shared.settings import DEPARTMENTS, BusKind, Settings
from tests.conftest import KafkaEnv

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

# Small waits between attempts, so that retries run within the test; nothing here judges timing.
FAST: dict[str, object] = {
    "webhook_allow_http": True,
    "webhook_allowed_networks": "127.0.0.1",
    "webhook_retry_schedule_s": [0.05, 0.1, 0.2],
    "webhook_max_attempts": 4,
    "webhook_poll_interval_s": 0.05,
}
WITHIN = 60.0


def support_indices(indices: Iterable[int]) -> list[int]:
    return [i for i in indices if "support" in TEMPLATES[i % len(TEMPLATES)][2]]


@dataclass
class Env:
    api: httpx.AsyncClient
    settings: Settings
    bus: Bus
    router: RouterService
    receiver: WebhookReceiver
    keys: dict[str, str]
    lag: Callable[[], Awaitable[int]]

    def auth(self, who: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}

    async def route(self, indices: Iterable[int]) -> list[OutMessage]:
        """Route these mentions with the router's own code and publish its events on the department topics."""
        encoded = [
            encode(topic="t", key=e.mention.id, event=e, source="/t")
            for e in (classified_event(i) for i in indices)
        ]
        records = [
            Record(topic="t", partition=0, offset=n, key=m.key, value=m.value) for n, m in enumerate(encoded)
        ]
        out = (await self.router.handle(records)).out
        await self.bus.send(out)
        return out

    async def register(self, path: str, *, department: str = "support", **extra: object) -> dict[str, Any]:
        body = {"department": department, "url": self.receiver.url(path), **extra}
        response = await self.api.post("/v1/webhooks", json=body, headers=self.auth())
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def deliveries(self, webhook_id: int, **params: str | int) -> list[dict[str, Any]]:
        """The whole delivery log, following the cursor."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            query: dict[str, str | int] = dict(params) | ({"cursor": cursor} if cursor else {})
            response = await self.api.get(
                f"/v1/webhooks/{webhook_id}/deliveries", params=query, headers=self.auth()
            )
            assert response.status_code == 200, response.text
            page = response.json()
            items.extend(page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                return items

    async def settled(
        self, webhook_id: int, count: int, *, status: str = "delivered"
    ) -> list[dict[str, Any]]:
        """Wait until the endpoint has `count` deliveries, all with `status`; the log."""

        async def done() -> bool:
            log = await self.deliveries(webhook_id)
            return len(log) == count and all(d["status"] == status for d in log)

        await wait_for(done, within=WITHIN, what=f"{count} {status} deliveries", interval=0.1)
        return await self.deliveries(webhook_id)

    async def fanned_out(self) -> None:
        """Wait until the fan-out has committed everything on the department topics."""

        async def caught_up() -> bool:
            return await self.lag() == 0

        await wait_for(caught_up, within=WITHIN, what="the webhook fan-out to catch up", interval=0.2)


async def _keys(url: str) -> dict[str, str]:
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            keys = {
                name: (await create_key(session, name=name, scopes=scopes, created_by="test")).key
                for name, scopes in {
                    "admin": ["admin"],
                    "support-writer": ["write:support"],
                    "support-reader": ["read:support"],
                    "pr-writer": ["write:pr"],
                }.items()
            }
            await session.commit()
    finally:
        await engine.dispose()
    return keys


@asynccontextmanager
async def _env(settings: Settings, bus: Bus, lag: Callable[[], Awaitable[int]]) -> AsyncIterator[Env]:
    keys = await _keys(settings.database_url) if settings.api_auth else {"admin": "-"}
    engine = create_engine(settings.database_url)
    router = RouterService(
        settings=settings,
        bus=bus,
        sessions=session_factory(engine),
        rules=RuleSet.from_file(settings.routing_file),
    )
    # Kafka: the app makes its own bus (the worker's consumer group and producer), as `python -m services.api`
    # does; memory: it shares the test's, as the embedded runner does.
    try:
        with webhook_receiver() as receiver:
            async with api_client(
                settings, engine=engine, bus=bus if settings.bus is BusKind.MEMORY else None
            ) as client:
                yield Env(client, settings, bus, router, receiver, keys, lag)
    finally:
        await engine.dispose()


EnvFactory = Callable[..., AbstractAsyncContextManager[Env]]


@pytest.fixture
async def make_env(kafka: KafkaEnv, pg_url: str) -> AsyncIterator[EnvFactory]:
    """An API (with its webhook worker and API keys) on Kafka and PostgreSQL, settings `FAST` plus the
    overrides."""
    buses: list[KafkaBus] = []

    @asynccontextmanager
    async def factory(**overrides: object) -> AsyncIterator[Env]:
        settings = kafka.settings(database_url=pg_url, api_auth=True, **(FAST | overrides))
        bus = KafkaBus(settings)
        await bus.start()
        buses.append(bus)
        await bus.ensure_topics(settings.all_topics())
        group = settings.group("webhooks")

        async def lag() -> int:
            return sum(
                [await group_lag(kafka.bootstrap, group, settings.topic_routed(d)) for d in DEPARTMENTS]
            )

        async with _env(settings, bus, lag) as env:
            yield env

    try:
        yield factory
    finally:
        for bus in buses:
            await bus.stop()


@pytest.fixture
async def env(make_env: EnvFactory) -> AsyncIterator[Env]:
    async with make_env() as e:
        yield e


def _signature_ok(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The receiver's check, as the README shows it."""
    timestamp = headers["x-mentionrouter-timestamp"]
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return any(
        hmac.compare_digest(f"sha256={expected}", s.strip())
        for s in headers["x-mentionrouter-signature"].split(",")
    )


async def test_routed_mentions_reach_the_endpoint_once_signed(env: Env) -> None:
    # Published before any endpoint exists: nobody gets these.
    await env.route(range(0, 10))
    hook = await env.register("/support")
    routed_only = await env.register("/support-routed", event_types=["mention.routed"])
    other = await env.register("/pr", department="pr", event_types=["mention.escalated"])
    assert hook["secret"].startswith("whsec_") and hook["event_types"] == [
        "mention.routed",
        "mention.escalated",
    ]
    shown = await env.api.get(f"/v1/webhooks/{hook['id']}", headers=env.auth())
    assert shown.status_code == 200 and "secret" not in shown.json()
    assert "secret" not in (await env.api.get("/v1/webhooks", headers=env.auth())).json()["items"][0]

    out = await env.route(range(10, 40))
    escalated = MentionEscalated(
        mention_id=classified_event(11).mention.id,
        department=Department.SUPPORT,
        status="new",
        previous_priority=Priority.P3,
        priority=Priority.P2,
        escalation_level=1,
        sla_due_at=utcnow(),
        escalated_at=utcnow(),
    )
    mention_id = escalated.mention_id
    escalation = encode(
        topic=env.settings.topic_routed("support"),
        key=mention_id,
        event=escalated,
        source="/test",
        event_id=f"{mention_id}:support:escalated:1",
    )
    await env.bus.send([escalation])
    support = {m.headers["ce_id"]: m for m in out if m.topic == env.settings.topic_routed("support")}
    assert len(support) == len(support_indices(range(10, 40))) > 5

    log = await env.settled(hook["id"], len(support) + 1)
    await env.settled(routed_only["id"], len(support))
    # Everything again (a producer retry, a replay): nobody gets anything twice.
    await env.bus.send([*out, escalation])
    await env.fanned_out()
    assert len(await env.deliveries(hook["id"])) == len(support) + 1

    requests = env.receiver.requests("/support")
    assert len(requests) == len(support) + 1
    assert {r.body for r in requests} == {m.value for m in support.values()} | {escalation.value}
    assert len({r.headers["x-mentionrouter-delivery"] for r in requests}) == len(requests)
    for r in requests:
        assert r.headers["content-type"] == "application/json"
        assert _signature_ok(hook["secret"], r.headers, r.body)
        assert verify(
            hook["secret"],
            timestamp=r.headers["x-mentionrouter-timestamp"],
            body=r.body,
            signature=r.headers["x-mentionrouter-signature"],
        )
        assert not _signature_ok(routed_only["secret"], r.headers, r.body)
        assert not _signature_ok(hook["secret"], r.headers, r.body + b" ")
        event = json.loads(r.body)
        assert r.headers["x-mentionrouter-event"] == event["type"]
        assert event["department"] == "support"
    assert sorted(json.loads(r.body)["type"] for r in requests).count("mention.escalated") == 1
    routed_requests = env.receiver.requests("/support-routed")
    assert {r.body for r in routed_requests} == {m.value for m in support.values()}
    assert env.receiver.requests("/pr") == []
    assert await env.deliveries(other["id"]) == []

    # The delivery log, newest first, page by page.
    paged = await env.deliveries(hook["id"], limit=4)
    assert paged == log
    assert [d["id"] for d in log] == sorted((d["id"] for d in log), reverse=True)
    assert {d["event_id"] for d in log} == set(support) | {f"{mention_id}:support:escalated:1"}
    for d in log:
        assert d["attempts"] == 1 and d["last_status_code"] == 200 and d["last_error"] is None
        assert d["delivered_at"] is not None and d["next_attempt_at"] is None
        assert d["webhook_id"] == hook["id"]
    assert {d["id"] for d in await env.deliveries(hook["id"], status="delivered")} == {d["id"] for d in log}
    assert await env.deliveries(hook["id"], status="dead") == []
    one = await env.api.get(f"/v1/webhooks/{hook['id']}/deliveries/{log[-1]['id']}", headers=env.auth())
    assert one.status_code == 200
    assert one.json()["payload"] == json.loads(support[one.json()["event_id"]].value)


async def test_failures_are_retried_with_backoff_until_delivered(env: Env) -> None:
    hook = await env.register("/flaky")
    env.receiver.fail("/flaky", 2, status=500)
    env.receiver.fail("/flaky", 1, status=429)
    await env.route([1])
    [delivery] = await env.settled(hook["id"], 1)
    assert (
        delivery["attempts"] == 4 and delivery["last_status_code"] == 200 and delivery["last_error"] is None
    )
    requests = env.receiver.requests("/flaky")
    assert [r.status for r in requests] == [500, 500, 429, 200]
    assert {r.headers["x-mentionrouter-delivery"] for r in requests} == {str(delivery["id"])}
    assert len({r.body for r in requests}) == 1
    # Every attempt is signed afresh, with its own timestamp.
    assert all(_signature_ok(hook["secret"], r.headers, r.body) for r in requests)
    stamps = [int(r.headers["x-mentionrouter-timestamp"]) for r in requests]
    assert stamps == sorted(stamps)


async def test_a_failed_delivery_waits_in_the_log_until_its_next_attempt(make_env: EnvFactory) -> None:
    async with make_env(webhook_retry_schedule_s=[3600.0]) as env:
        hook = await env.register("/later")
        env.receiver.answer("/later", 502)
        await env.route([1])
        [delivery] = await env.settled(hook["id"], 1, status="retrying")
        assert delivery["attempts"] == 1 and delivery["last_status_code"] == 502
        assert delivery["last_error"].startswith("HTTP 502: ")
        next_at = datetime.fromisoformat(delivery["next_attempt_at"])
        # An hour ±20 %: far later than the attempt, whatever the jitter.
        assert (next_at - datetime.fromisoformat(delivery["last_attempt_at"])).total_seconds() > 2000
        assert next_at > datetime.now(UTC)
        retry = await env.api.post(
            f"/v1/webhooks/{hook['id']}/deliveries/{delivery['id']}/retry", headers=env.auth()
        )
        assert retry.status_code == 409
        assert len(env.receiver.requests("/later")) == 1


async def test_dead_after_the_last_attempt_and_retried_by_hand(env: Env) -> None:
    hook = await env.register("/down")
    env.receiver.answer("/down", 503)
    unreachable = await env.api.post(
        "/v1/webhooks",
        json={"department": "support", "url": f"http://127.0.0.1:{free_port()}/nobody"},
        headers=env.auth(),
    )
    assert unreachable.status_code == 201
    await env.route([1])
    [dead] = await env.settled(hook["id"], 1, status="dead")
    assert dead["attempts"] == 4 and dead["last_status_code"] == 503 and dead["next_attempt_at"] is None
    assert dead["last_error"].startswith("HTTP 503: ") and "on purpose" in dead["last_error"]
    assert len(env.receiver.requests("/down")) == 4
    [refused] = await env.settled(unreachable.json()["id"], 1, status="dead")
    assert refused["attempts"] == 4 and refused["last_status_code"] is None
    assert refused["last_error"].startswith("ConnectError")

    env.receiver.answer("/down", 200)
    retry = await env.api.post(f"/v1/webhooks/{hook['id']}/deliveries/{dead['id']}/retry", headers=env.auth())
    assert retry.status_code == 202, retry.text
    assert retry.json()["status"] == "retrying"
    [delivered] = await env.settled(hook["id"], 1)
    assert delivered["attempts"] == 5 and delivered["last_status_code"] == 200
    assert [r.status for r in env.receiver.requests("/down")] == [503] * 4 + [200]
    again = await env.api.post(f"/v1/webhooks/{hook['id']}/deliveries/{dead['id']}/retry", headers=env.auth())
    assert again.status_code == 409
    missing = await env.api.post(f"/v1/webhooks/{hook['id']}/deliveries/999999/retry", headers=env.auth())
    assert missing.status_code == 404


async def test_410_gone_disables_the_endpoint(env: Env) -> None:
    hook = await env.register("/gone")
    env.receiver.answer("/gone", 410)
    await env.route([1])
    [dead] = await env.settled(hook["id"], 1, status="dead")
    assert dead["attempts"] == 1 and dead["last_status_code"] == 410
    shown = (await env.api.get(f"/v1/webhooks/{hook['id']}", headers=env.auth())).json()
    assert shown["enabled"] is False and "410 Gone" in shown["disabled_reason"]
    # Disabled: what is routed now is not delivered, nor queued for later.
    await env.route([6, 11])
    await env.fanned_out()
    assert len(await env.deliveries(hook["id"])) == 1
    assert len(env.receiver.requests("/gone")) == 1
    retry = await env.api.post(f"/v1/webhooks/{hook['id']}/deliveries/{dead['id']}/retry", headers=env.auth())
    assert retry.status_code == 409

    env.receiver.answer("/gone", 200)
    enabled = await env.api.patch(f"/v1/webhooks/{hook['id']}", json={"enabled": True}, headers=env.auth())
    assert enabled.status_code == 200
    assert enabled.json()["enabled"] is True and enabled.json()["disabled_reason"] is None
    await env.route([16])

    async def delivered() -> bool:
        return len(await env.deliveries(hook["id"], status="delivered")) == 1

    await wait_for(delivered, within=WITHIN, what="a delivery after re-enabling", interval=0.1)
    assert [r.status for r in env.receiver.requests("/gone")] == [410, 200]


async def test_scopes(env: Env) -> None:
    hook = await env.register("/scoped")
    path = f"/v1/webhooks/{hook['id']}"
    body = {"department": "support", "url": env.receiver.url("/x")}
    # Another department's key: the endpoint does not exist for it.
    pr = env.auth("pr-writer")
    assert (await env.api.get(path, headers=pr)).status_code == 404
    assert (await env.api.patch(path, json={"enabled": False}, headers=pr)).status_code == 404
    assert (await env.api.delete(path, headers=pr)).status_code == 404
    assert (await env.api.get(f"{path}/deliveries", headers=pr)).status_code == 404
    assert (await env.api.post(f"{path}/test", headers=pr)).status_code == 404
    assert (await env.api.post(f"{path}/rotate-secret", headers=pr)).status_code == 404
    assert (await env.api.get("/v1/webhooks", headers=pr)).json()["items"] == []
    assert (
        await env.api.get("/v1/webhooks", params={"department": "support"}, headers=pr)
    ).status_code == 403
    assert (await env.api.post("/v1/webhooks", json=body, headers=pr)).status_code == 403
    # A read-only key sees the endpoint and its log, and changes nothing.
    reader = env.auth("support-reader")
    assert (await env.api.get(path, headers=reader)).status_code == 200
    assert (await env.api.get(f"{path}/deliveries", headers=reader)).status_code == 200
    assert [h["id"] for h in (await env.api.get("/v1/webhooks", headers=reader)).json()["items"]] == [
        hook["id"]
    ]
    assert (await env.api.post("/v1/webhooks", json=body, headers=reader)).status_code == 403
    assert (await env.api.patch(path, json={"enabled": False}, headers=reader)).status_code == 403
    assert (await env.api.delete(path, headers=reader)).status_code == 403
    assert (await env.api.post(f"{path}/rotate-secret", headers=reader)).status_code == 403
    assert (await env.api.post(f"{path}/test", headers=reader)).status_code == 403
    assert env.receiver.requests("/scoped") == []
    # The department's writer manages it.
    writer = env.auth("support-writer")
    created = await env.api.post("/v1/webhooks", json=body, headers=writer)
    assert created.status_code == 201 and created.json()["created_by"] == "support-writer"
    assert created.headers["location"] == f"/v1/webhooks/{created.json()['id']}"
    assert (await env.api.patch(path, json={"enabled": False}, headers=writer)).json()["enabled"] is False
    assert (await env.api.get("/v1/webhooks")).status_code == 401


async def test_change_and_delete(env: Env) -> None:
    hook = await env.register("/a", description="helpdesk")
    path = f"/v1/webhooks/{hook['id']}"
    changed = await env.api.patch(
        path,
        json={"url": env.receiver.url("/b"), "event_types": ["mention.escalated"], "description": "sync"},
        headers=env.auth(),
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["url"] == env.receiver.url("/b")
    assert changed.json()["event_types"] == ["mention.escalated"] and changed.json()["description"] == "sync"
    invalid: list[dict[str, object]] = [
        {"event_types": ["mention.deleted"]},
        {"event_types": []},
        {"secret": "mine"},
        {"url": "ftp://x/"},
    ]
    for bad in invalid:
        assert (await env.api.patch(path, json=bad, headers=env.auth())).status_code == 422, bad
    refused = await env.api.patch(path, json={"url": "http://10.9.8.7/hook"}, headers=env.auth())
    assert refused.status_code == 422 and "private address" in refused.text
    bad_department = {"department": "legal", "url": env.receiver.url("/c")}
    assert (await env.api.post("/v1/webhooks", json=bad_department, headers=env.auth())).status_code == 422
    bad_cursor = await env.api.get(f"{path}/deliveries", params={"cursor": "x1"}, headers=env.auth())
    assert bad_cursor.status_code == 422
    assert (await env.api.delete(path, headers=env.auth())).status_code == 204
    assert (await env.api.get(path, headers=env.auth())).status_code == 404
    assert (await env.api.get(f"{path}/deliveries", headers=env.auth())).status_code == 404


async def test_ping_and_secret_rotation(env: Env) -> None:
    hook = await env.register("/ping")
    path = f"/v1/webhooks/{hook['id']}"
    ping = await env.api.post(f"{path}/test", headers=env.auth())
    assert ping.status_code == 200, ping.text
    assert ping.json()["status"] == "delivered" and ping.json()["event_type"] == "ping"
    [first] = env.receiver.requests("/ping")
    assert json.loads(first.body)["type"] == "ping" and json.loads(first.body)["webhook_id"] == hook["id"]
    assert first.headers["x-mentionrouter-event"] == "ping"
    assert _signature_ok(hook["secret"], first.headers, first.body)

    rotated = await env.api.post(f"{path}/rotate-secret", headers=env.auth())
    assert rotated.status_code == 200
    new = rotated.json()["secret"]
    assert new != hook["secret"] and rotated.json()["previous_secret_expires_at"] is not None
    await env.api.post(f"{path}/test", headers=env.auth())
    second = env.receiver.requests("/ping")[1]
    # During the overlap both secrets verify: the receiver switches when it likes.
    assert second.headers["x-mentionrouter-signature"].count("sha256=") == 2
    assert _signature_ok(new, second.headers, second.body)
    assert _signature_ok(hook["secret"], second.headers, second.body)

    again = await env.api.post(f"{path}/rotate-secret", json={"previous_valid_for_s": 0}, headers=env.auth())
    assert again.json()["previous_secret_expires_at"] is None
    await env.api.post(f"{path}/test", headers=env.auth())
    third = env.receiver.requests("/ping")[2]
    assert _signature_ok(again.json()["secret"], third.headers, third.body)
    assert not _signature_ok(new, third.headers, third.body)

    # A failing ping is tried once, not retried.
    env.receiver.answer("/ping", 500)
    failed = await env.api.post(f"{path}/test", headers=env.auth())
    assert failed.json()["status"] == "dead" and failed.json()["last_status_code"] == 500
    assert len(env.receiver.requests("/ping")) == 4
    pings = await env.deliveries(hook["id"])
    assert [d["status"] for d in pings] == ["dead", "delivered", "delivered", "delivered"]


async def test_internal_addresses_are_refused_without_the_allowlist(make_env: EnvFactory) -> None:
    async with make_env(webhook_allowed_networks="") as env:
        for url, why in [
            (env.receiver.url("/internal"), "a loopback address"),
            ("http://10.1.2.3/hook", "a private address"),
            ("http://192.168.0.10:8080/hook", "a private address"),
            ("http://169.254.169.254/latest/meta-data", "a cloud metadata address"),
            ("http://[::1]:8080/hook", "a loopback address"),
        ]:
            response = await env.api.post(
                "/v1/webhooks", json={"department": "support", "url": url}, headers=env.auth()
            )
            assert response.status_code == 422, url
            assert why in response.text and "MR_WEBHOOK_ALLOWED_NETWORKS" in response.text
        # An endpoint that passed when it was registered (the name resolved elsewhere then, say) is
        # checked again when the request connects.
        engine = create_engine(env.settings.database_url)
        try:
            async with session_factory(engine)() as session:
                row = WebhookEndpointRow(
                    department="support",
                    url=env.receiver.url("/internal"),
                    secret="whsec_test",
                    event_types=["mention.routed"],
                    enabled=True,
                    description="",
                    created_at=utcnow(),
                    created_by="test",
                    updated_at=utcnow(),
                )
                session.add(row)
                await session.commit()
                webhook_id = row.id
        finally:
            await engine.dispose()
        ping = await env.api.post(f"/v1/webhooks/{webhook_id}/test", headers=env.auth())
        assert ping.status_code == 200
        assert ping.json()["status"] == "dead" and ping.json()["last_status_code"] is None
        assert "a loopback address; refused" in ping.json()["last_error"]
        assert env.receiver.requests("/internal") == []


async def test_embedded_mode_on_the_memory_bus_and_sqlite(sqlite_url: str) -> None:
    settings = Settings().model_copy(
        update={"bus": BusKind.MEMORY, "database_url": sqlite_url, "api_auth": False, **FAST}
    )
    bus = MemoryBus(partitions=settings.topic_partitions)
    group = settings.group("webhooks")

    async def lag() -> int:
        return sum(bus.broker.lag(group, settings.topic_routed(d)) for d in DEPARTMENTS)

    async with _env(settings, bus, lag) as env:
        hook = await env.register("/embedded")
        out = await env.route(range(20))
        support = [m for m in out if m.topic == settings.topic_routed("support")]
        await env.settled(hook["id"], len(support))
        await env.bus.send(out)
        await env.fanned_out()
        await env.settled(hook["id"], len(support))
        requests = env.receiver.requests("/embedded")
        assert sorted(r.body for r in requests) == sorted(m.value for m in support)
        assert all(_signature_ok(hook["secret"], r.headers, r.body) for r in requests)
