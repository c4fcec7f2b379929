"""Routing rules through the API on a real PostgreSQL: seeding, validation, dry run, shadow replay,
audited activation, and running routers switching to a new version without a restart (real Kafka)."""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import func, select

from devsupport.apiclient import api_client
from devsupport.factories import TEMPLATES, classified_event
from devsupport.scenario import wait_for
from services.router.bootstrap import build
from shared.bus import MemoryBus, Record
from shared.bus.codec import encode
from shared.bus.kafka import KafkaBus
from shared.db import AssignmentRow, MentionRow, RuleSetRow, create_engine, session_factory
from shared.settings import BusKind, Settings
from tests.conftest import KafkaEnv

pytestmark = pytest.mark.postgres

PRICING = next(i for i, t in enumerate(TEMPLATES) if t[0].startswith("Billed twice"))  # order + pricing


def default_rules(settings: Settings) -> dict[str, Any]:
    body = yaml.safe_load(settings.routing_file.read_text(encoding="utf-8"))
    assert isinstance(body, dict)
    return body


def with_rule_first(body: dict[str, Any], rule: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(body)
    out["rules"] = [rule, *out["rules"]]
    return out


@pytest.fixture
async def settings(pg_url: str) -> Settings:
    return Settings().model_copy(update={"database_url": pg_url, "bus": BusKind.MEMORY})


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    engine = create_engine(settings.database_url)
    # The router seeds version 1 from config/routing.yaml and stores a few mentions.
    router = build(settings, bus=MemoryBus(), engine=engine)
    assert await router.load_rules() == 1
    events = [classified_event(i) for i in range(len(TEMPLATES) * 2)]
    messages = [encode(topic="t", key=e.mention.id, event=e, source="/t") for e in events]
    await router.handle(
        [Record(topic="t", partition=0, offset=n, key=m.key, value=m.value) for n, m in enumerate(messages)]
    )
    async with api_client(settings, engine=engine, headers={"X-Actor": "ops-kim"}) as c:
        yield c
    await engine.dispose()


async def _counts(url: str) -> tuple[int, int, int]:
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            return (
                int(await session.scalar(select(func.count()).select_from(MentionRow)) or 0),
                int(await session.scalar(select(func.count()).select_from(AssignmentRow)) or 0),
                int(await session.scalar(select(func.count()).select_from(RuleSetRow)) or 0),
            )
    finally:
        await engine.dispose()


async def test_the_yaml_file_seeds_version_1(api: httpx.AsyncClient, settings: Settings) -> None:
    active = (await api.get("/v1/routing-rules")).json()
    assert (active["version"], active["active"], active["created_by"]) == (1, True, "seed")
    names = [r["name"] for r in active["rules"]["rules"]]
    assert names == [r["name"] for r in default_rules(settings)["rules"]]
    # Seeding again (a second replica starting) changes nothing.
    router = build(settings, bus=MemoryBus(), engine=create_engine(settings.database_url))
    assert await router.load_rules() == 1
    assert (await _counts(settings.database_url))[2] == 1


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"name": "x", "when": {"topics_any": ["security"]}, "route": [{"department": "legal"}]}, "legal"),
        (
            {"name": "x", "when": {"topics_any": ["no-such-topic"]}, "route": [{"department": "pr"}]},
            "no-such-topic",
        ),
        (
            {"name": "x", "when": {"min_score": 0.5, "max_score": -0.5}, "route": [{"department": "pr"}]},
            "never",
        ),
        ({"name": "x", "when": {"colour": "red"}, "route": [{"department": "pr"}]}, "colour"),
        ({"name": "x", "when": {}, "route": []}, "route"),
    ],
)
async def test_an_invalid_rule_set_is_refused_pointing_at_the_rule(
    api: httpx.AsyncClient, settings: Settings, rule: dict[str, Any], message: str
) -> None:
    before = await _counts(settings.database_url)
    r = await api.post(
        "/v1/routing-rules/versions", json={"rules": with_rule_first(default_rules(settings), rule)}
    )
    assert r.status_code == 422, r.text
    body = r.json()
    assert "'x'" in body["detail"] and message in body["detail"], body
    assert body["rule_index"] == 1 and body["rule"] == "x", "the problem names the rule"
    assert await _counts(settings.database_url) == before, "nothing stored"
    assert (await api.get("/v1/routing-rules")).json()["version"] == 1, "the running set stays active"


async def test_dry_run_classifies_routes_and_persists_nothing(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    before = await _counts(settings.database_url)
    r = await api.post(
        "/v1/routing-rules/test",
        json={
            "mention": {
                "title": "Security hole in the Tessellate login",
                "text": "A security vulnerability lets anyone bypass authentication on shared boards.",
                "influence": 3,
            }
        },
    )
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["rules_version"] == 1
    assert "security" in [t["name"] for t in result["classification"]["topics"]]
    assert {"rnd", "pr"} <= set(result["departments"])
    assert result["assignments"][0]["priority"] == "P1"
    security = next(m for m in result["matched"] if m["rule"] == "security-to-rnd-and-pr")
    assert any("security" in c for c in security["conditions"]), "the dry run says which conditions held"

    # A stored mention, against a candidate that sends everything to support first.
    stored = (await api.get("/v1/mentions", params={"limit": 1})).json()["items"][0]
    candidate = {
        "fallback": default_rules(settings)["fallback"],
        "rules": [
            {"name": "all-to-support", "when": {}, "route": [{"department": "support", "priority": "P1"}]}
        ],
    }
    r = await api.post("/v1/routing-rules/test", json={"mention_id": stored["id"], "rules": candidate})
    assert r.status_code == 200, r.text
    assert r.json()["departments"] == ["support"] and r.json()["rules_version"] is None
    assert await _counts(settings.database_url) == before

    assert (await api.post("/v1/routing-rules/test", json={"mention_id": "nope"})).status_code == 404
    assert (await api.post("/v1/routing-rules/test", json={})).status_code == 422


async def test_shadow_replay_reports_the_change_and_persists_nothing(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    before = await _counts(settings.database_url)
    candidate = with_rule_first(
        default_rules(settings),
        {
            "name": "pricing-to-product",
            "when": {"topics_any": ["pricing"]},
            "route": [{"department": "product"}],
        },
    )
    r = await api.post("/v1/routing-rules/replay", json={"rules": candidate, "limit": 500})
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["active_version"] == 1 and report["examined"] == before[0]
    pricing = [x for x in report["examples"] if x["title"].startswith("Billed twice")]
    assert pricing and report["changed"] >= len(pricing)
    assert all(any(a.startswith("product:") for a in x["after"]) for x in pricing)
    assert report["by_department"]["product"]["gained"] >= len(pricing)
    assert report["changed_rules"]["pricing-to-product"] >= len(pricing)
    # The same set as the active one changes nothing.
    same = (await api.post("/v1/routing-rules/replay", json={"rules": default_rules(settings)})).json()
    assert (same["changed"], same["examples"]) == (0, [])
    assert await _counts(settings.database_url) == before


async def test_activation_is_atomic_and_audited(api: httpx.AsyncClient, settings: Settings) -> None:
    body = with_rule_first(
        default_rules(settings),
        {
            "name": "pricing-to-product",
            "when": {"topics_any": ["pricing"]},
            "route": [{"department": "product"}],
        },
    )
    created = await api.post(
        "/v1/routing-rules/versions", json={"rules": body, "comment": "pricing is product's"}
    )
    assert created.status_code == 201, created.text
    assert (created.json()["version"], created.json()["active"]) == (2, False)
    assert (await api.get("/v1/routing-rules")).json()["version"] == 1, "creating does not activate"

    done = await api.post("/v1/routing-rules/versions/2/activate")
    assert done.status_code == 200, done.text
    assert (done.json()["version"], done.json()["previous_version"], done.json()["activated_by"]) == (
        2,
        1,
        "ops-kim",
    )
    versions = (await api.get("/v1/routing-rules/versions")).json()["items"]
    assert [(v["version"], v["active"]) for v in versions] == [(2, True), (1, False)]
    audit = (await api.get("/v1/routing-rules/audit")).json()["items"]
    assert [(a["action"], a["version"], a["previous_version"], a["actor"]) for a in audit] == [
        ("activated", 2, 1, "ops-kim"),
        ("created", 2, None, "ops-kim"),
    ]
    # Rolling back is activating the old version.
    back = (await api.post("/v1/routing-rules/versions/1/activate")).json()
    assert (back["version"], back["previous_version"]) == (1, 2)
    assert (await api.post("/v1/routing-rules/versions/9/activate")).status_code == 404


async def test_concurrent_activations_leave_one_active_version(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    for _ in range(4):
        assert (
            await api.post("/v1/routing-rules/versions", json={"rules": default_rules(settings)})
        ).status_code == 201
    answers = await asyncio.gather(
        *(api.post(f"/v1/routing-rules/versions/{v}/activate") for v in (2, 3, 4, 5))
    )
    assert all(a.status_code == 200 for a in answers)
    active = [
        v["version"] for v in (await api.get("/v1/routing-rules/versions")).json()["items"] if v["active"]
    ]
    assert len(active) == 1
    # The audit chains: each activation names the one before it.
    audit = (await api.get("/v1/routing-rules/audit")).json()["items"]
    chain = [(a["previous_version"], a["version"]) for a in reversed(audit) if a["action"] == "activated"]
    assert chain[0][0] == 1
    assert all(prev == before for (_, before), (prev, _) in itertools.pairwise(chain))
    assert chain[-1][1] == active[0]


@pytest.mark.kafka
async def test_running_routers_switch_to_an_activated_version_without_restart(
    kafka: KafkaEnv, pg_url: str
) -> None:
    settings = kafka.settings(database_url=pg_url, router_rules_refresh_s=0.2)
    engine = create_engine(pg_url)
    bus = KafkaBus(settings)
    await bus.start()
    await bus.ensure_topics(settings.all_topics())
    stop = asyncio.Event()
    routers = [build(settings, bus=bus, engine=engine) for _ in range(2)]
    tasks = [asyncio.create_task(r.run(stop)) for r in routers]
    try:
        await wait_for(lambda: _all_at(routers, 1), within=30, what="both routers on version 1")
        async with api_client(settings, engine=engine, bus=bus) as api:
            body = with_rule_first(
                default_rules(settings),
                {
                    "name": "pricing-to-product",
                    "when": {"topics_any": ["pricing"]},
                    "route": [{"department": "product", "priority": "P2"}],
                    "tags": ["pricing-review"],
                },
            )
            assert (await api.post("/v1/routing-rules/versions", json={"rules": body})).status_code == 201
            assert (await api.post("/v1/routing-rules/versions/2/activate")).status_code == 200
            await wait_for(lambda: _all_at(routers, 2), within=30, what="both routers on version 2")

            event = classified_event(PRICING)
            await bus.send(
                [encode(topic=settings.topic_classified, key=event.mention.id, event=event, source="/t")]
            )

            async def routed() -> bool:
                return bool((await api.get(f"/v1/mentions/{event.mention.id}")).status_code == 200)

            await wait_for(routed, within=60, what="the pricing mention routed")
            mention = (await api.get(f"/v1/mentions/{event.mention.id}")).json()
            product = [a for a in mention["assignments"] if a["department"] == "product"]
            assert product and product[0]["rules"][0] == "pricing-to-product"
            assert "pricing-review" in product[0]["tags"]
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await bus.stop()
        await engine.dispose()


async def _all_at(routers: list[Any], version: int) -> bool:
    return all(r.holder.version == version for r in routers)
