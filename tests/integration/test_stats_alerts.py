"""Stats and spike alerts on a real PostgreSQL and on SQLite: mentions stored by the router's own code at
known times (an injected clock), counted per bucket and group through the API, restricted to the key's
departments; spikes detected by the router, published through the outbox to the real Kafka, shown and
acknowledged through the API."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from devsupport.apiclient import api_client
from devsupport.factories import TEMPLATES, classified_event
from devsupport.kafka import read_topics
from services.router.service import RouterService
from shared.apikeys import create_key
from shared.bus import Bus, MemoryBus, Record
from shared.bus.codec import encode
from shared.bus.kafka import KafkaBus
from shared.db import AlertRow, OutboxRow, create_engine, session_factory
from shared.events import MentionAlert
from shared.routing import RuleSet
from shared.settings import BusKind, Settings
from tests.conftest import KafkaEnv

BACKENDS = [pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"]
HOUR = timedelta(hours=1)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue("pg_url" if request.param == "postgres" else "sqlite_url")
    return url


@dataclass
class World:
    settings: Settings
    engine: AsyncEngine
    router: RouterService
    clock: Clock
    api: httpx.AsyncClient
    keys: dict[str, str]

    async def route(self, at: datetime, *indexes: int) -> None:
        """Route the factory mentions `indexes` (template = index % 10) at `at`."""
        self.clock.now = at
        events = [classified_event(i) for i in indexes]
        records = [
            Record(topic="t", partition=0, offset=n, key=e.mention.id, value=m.value)
            for n, (e, m) in enumerate(
                (e, encode(topic="t", key=e.mention.id, event=e, source="/t")) for e in events
            )
        ]
        result = await self.router.handle(records)
        assert not result.dead

    async def get(self, path: str, key: str = "admin", **params: Any) -> httpx.Response:
        return await self.api.get(path, params=params, headers={"Authorization": f"Bearer {self.keys[key]}"})

    async def post(self, path: str, key: str = "admin", **headers: str) -> httpx.Response:
        return await self.api.post(path, headers={"Authorization": f"Bearer {self.keys[key]}", **headers})

    async def alerts(self) -> list[AlertRow]:
        async with session_factory(self.engine)() as session:
            return list(await session.scalars(select(AlertRow).order_by(AlertRow.id)))

    async def outbox(self) -> int:
        async with session_factory(self.engine)() as session:
            return int(await session.scalar(select(func.count()).select_from(OutboxRow)) or 0)


KEYS = {
    "admin": ["admin"],
    "support": ["read:support"],
    "support-writer": ["write:support"],
    "pr": ["read:pr"],
    "everyone": ["read:*"],
}


async def _world(settings: Settings, bus: Bus, clock: Clock) -> AsyncIterator[World]:
    engine = create_engine(settings.database_url)
    keys: dict[str, str] = {}
    async with session_factory(engine)() as session:
        for name, scopes in KEYS.items():
            keys[name] = (await create_key(session, name=name, scopes=scopes, created_by="test")).key
        await session.commit()
    router = RouterService(
        settings=settings,
        bus=bus,
        sessions=session_factory(engine),
        rules=RuleSet.from_file(settings.routing_file),
        clock=clock,
    )
    async with api_client(settings, engine=engine, bus=bus) as api:
        yield World(settings, engine, router, clock, api, keys)
    await engine.dispose()


# ------------------------------------------------------------------------------------------------ stats

DAY0 = datetime(2026, 11, 25, tzinfo=UTC)
# (when routed, factory indexes): template = index % 10 (devsupport/factories.py)
BATCHES = [
    (datetime(2026, 11, 25, 23, 30, tzinfo=UTC), range(0, 5)),
    (datetime(2026, 11, 26, 9, 10, tzinfo=UTC), range(5, 15)),
    (datetime(2026, 11, 26, 10, 0, tzinfo=UTC), range(15, 22)),  # on the hour: counted in 10:00
    (datetime(2026, 11, 26, 10, 59, 59, tzinfo=UTC), range(22, 30)),
]
WINDOW = {"from": "2026-11-25T00:00:00Z", "to": "2026-11-27T00:00:00Z"}


@pytest.fixture
async def stats_world(db_url: str) -> AsyncIterator[World]:
    settings = Settings().model_copy(update={"database_url": db_url, "bus": BusKind.MEMORY, "api_auth": True})
    async for world in _world(settings, MemoryBus(), Clock(DAY0)):
        for at, indexes in BATCHES:
            await world.route(at, *indexes)
        yield world


def _expected(groups: list[str], *, departments: set[str] | None = None, bucket: str = "hour") -> list[Any]:
    """The series the API must return, from the factory's templates and the classifier's topics."""
    counts: Counter[tuple[Any, ...]] = Counter()
    for at, indexes in BATCHES:
        start = at.replace(minute=0, second=0) if bucket == "hour" else at.replace(hour=0, minute=0, second=0)
        for i in indexes:
            event = classified_event(i)
            routed_to = TEMPLATES[i % len(TEMPLATES)][2]
            if departments is not None and not routed_to & departments:
                continue
            dims: list[list[Any]] = [[start]]
            for g in groups:
                if g == "department":
                    dims.append(sorted(routed_to & departments if departments is not None else routed_to))
                elif g == "topic":
                    dims.append([t.name for t in event.classification.topics] or [None])
                else:
                    dims.append([event.classification.sentiment.value])
            combos: list[tuple[Any, ...]] = [()]
            for values in dims:
                combos = [(*c, v) for c in combos for v in values]
            counts.update(combos)
    return sorted(
        ((k[0].isoformat().replace("+00:00", "Z"), *k[1:], n) for k, n in counts.items()),
        key=lambda r: tuple("" if v is None else v for v in r[:-1]),
    )


def _series(body: dict[str, Any]) -> list[Any]:
    groups = body["group_by"]
    return [
        (p["bucket_start"].replace("+00:00", "Z"), *(p[g] for g in groups), p["count"])
        for p in body["series"]
    ]


async def test_counts_per_hour_and_day(stats_world: World) -> None:
    r = await stats_world.get("/v1/stats/mentions", bucket="hour", **WINDOW)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["bucket"], body["group_by"]) == ("hour", [])
    assert body["from"].startswith("2026-11-25T00:00:00") and body["to"].startswith("2026-11-27T00:00:00")
    assert _series(body) == [
        ("2026-11-25T23:00:00Z", 5),
        ("2026-11-26T09:00:00Z", 10),
        ("2026-11-26T10:00:00Z", 15),
    ]
    assert set(body["series"][0]) == {"bucket_start", "count"}, "no group keys when not grouped"

    days = (await stats_world.get("/v1/stats/mentions", bucket="day", **WINDOW)).json()
    assert _series(days) == [("2026-11-25T00:00:00Z", 5), ("2026-11-26T00:00:00Z", 25)]

    # The window's edges: `from` inclusive, `to` exclusive.
    edge = await stats_world.get(
        "/v1/stats/mentions", **{"from": "2026-11-26T10:00:00Z", "to": "2026-11-26T10:59:59Z"}
    )
    assert _series(edge.json()) == [("2026-11-26T10:00:00Z", 7)]


@pytest.mark.parametrize(
    "groups",
    [["department"], ["topic"], ["sentiment"], ["department", "topic"], ["topic", "sentiment", "department"]],
)
async def test_counts_per_group(stats_world: World, groups: list[str]) -> None:
    r = await stats_world.get("/v1/stats/mentions", group_by=groups, **WINDOW)
    assert r.status_code == 200, r.text
    assert r.json()["group_by"] == groups
    assert _series(r.json()) == _expected(groups)


async def test_counts_per_group_by_day(stats_world: World) -> None:
    r = await stats_world.get("/v1/stats/mentions", bucket="day", group_by=["department"], **WINDOW)
    assert _series(r.json()) == _expected(["department"], bucket="day")
    rnd = {row[1]: row[2] for row in _series(r.json()) if row[0] == "2026-11-26T00:00:00Z"}
    # Templates 0, 4, 6 go to R&D: indexes 6, 10, 14, 16, 20, 24, 26 of those routed on the 26th.
    assert rnd["rnd"] == 7


async def test_a_key_counts_only_its_departments_mentions(stats_world: World) -> None:
    support = await stats_world.get("/v1/stats/mentions", "support", **WINDOW)
    assert support.status_code == 200, support.text
    assert _series(support.json()) == _expected([], departments={"support"})
    # Support's templates are 1, 6 and 7: index 1; then 6, 7, 11; then 16, 17, 21 and 26, 27.
    assert [row[-1] for row in _series(support.json())] == [1, 3, 5]

    by_department = await stats_world.get("/v1/stats/mentions", "support", group_by=["department"], **WINDOW)
    assert {row[1] for row in _series(by_department.json())} == {"support"}
    assert _series(by_department.json()) == _expected(["department"], departments={"support"})
    by_topic = await stats_world.get("/v1/stats/mentions", "support", group_by=["topic"], **WINDOW)
    assert _series(by_topic.json()) == _expected(["topic"], departments={"support"})

    # A key for every department sees what the admin sees.
    everyone = await stats_world.get("/v1/stats/mentions", "everyone", group_by=["department"], **WINDOW)
    assert _series(everyone.json()) == _expected(["department"])

    # Asking for another department: 403; for its own: the same as without.
    assert (
        await stats_world.get("/v1/stats/mentions", "support", department="pr", **WINDOW)
    ).status_code == 403
    own = await stats_world.get("/v1/stats/mentions", "support", department="support", **WINDOW)
    assert _series(own.json()) == _series(support.json())
    admin_pr = await stats_world.get("/v1/stats/mentions", department="pr", group_by=["department"], **WINDOW)
    assert _series(admin_pr.json()) == _expected(["department"], departments={"pr"})
    assert (await stats_world.api.get("/v1/stats/mentions")).status_code == 401


async def test_filters_by_topic_and_sentiment(stats_world: World) -> None:
    r = await stats_world.get("/v1/stats/mentions", topic="pricing", group_by=["topic"], **WINDOW)
    # Template 7 (order + pricing): indexes 7, 17, 27; grouped by topic only the topic asked for.
    assert _series(r.json()) == [
        ("2026-11-26T09:00:00Z", "pricing", 1),
        ("2026-11-26T10:00:00Z", "pricing", 2),
    ]
    totals = await stats_world.get("/v1/stats/mentions", topic="pricing", **WINDOW)
    assert _series(totals.json()) == [("2026-11-26T09:00:00Z", 1), ("2026-11-26T10:00:00Z", 2)]
    negative = await stats_world.get(
        "/v1/stats/mentions", sentiment="negative", group_by=["sentiment"], **WINDOW
    )
    expected = [row for row in _expected(["sentiment"]) if row[1] == "negative"]
    assert _series(negative.json()) == expected


async def test_windows_are_checked(stats_world: World) -> None:
    default = await stats_world.get("/v1/stats/mentions")
    assert default.status_code == 200
    start = datetime.fromisoformat(default.json()["from"])
    end = datetime.fromisoformat(default.json()["to"])
    assert start.minute == start.second == 0 and timedelta(hours=23) < end - start <= timedelta(hours=24)
    days = (await stats_world.get("/v1/stats/mentions", bucket="day")).json()
    span = datetime.fromisoformat(days["to"]) - datetime.fromisoformat(days["from"])
    assert timedelta(days=29) < span <= timedelta(days=30)

    too_many = await stats_world.get(
        "/v1/stats/mentions", **{"from": "2020-01-01T00:00:00Z", "to": WINDOW["to"]}
    )
    assert too_many.status_code == 422 and "at most 1000" in too_many.json()["detail"]
    years = await stats_world.get(
        "/v1/stats/mentions", bucket="day", **{"from": "2024-06-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}
    )
    assert years.status_code == 200 and _series(years.json()) == [
        ("2026-11-25T00:00:00Z", 5),
        ("2026-11-26T00:00:00Z", 25),
    ]
    backwards = await stats_world.get("/v1/stats/mentions", **{"from": WINDOW["to"], "to": WINDOW["from"]})
    assert backwards.status_code == 422
    naive = await stats_world.get("/v1/stats/mentions", **{"from": "2026-11-25T00:00:00"})
    assert naive.status_code == 422
    assert (await stats_world.get("/v1/stats/mentions", group_by="colour")).status_code == 422
    assert (await stats_world.get("/v1/stats/mentions", bucket="week")).status_code == 422
    ancient = await stats_world.get("/v1/stats/mentions", to="0001-01-01T00:00:00Z")
    assert ancient.status_code == 422
    assert (await stats_world.post("/v1/alerts/99999999999/acknowledge")).status_code == 422
    assert (await stats_world.get("/v1/alerts", cursor="9999999999")).json()["items"] == []


# ----------------------------------------------------------------------------------------------- alerts

T = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
HOW_TO = 1  # the template whose only topic is how_to (support's, in the taxonomy)


@pytest.fixture
async def alert_world(kafka: KafkaEnv, db_url: str) -> AsyncIterator[World]:
    settings = kafka.settings(
        database_url=db_url,
        api_auth=True,
        alert_baseline_hours=24,
        alert_min_history_hours=24,
        alert_min_count=5,
        alert_ratio=3.0,
        alert_stddevs=3.0,
    )
    bus = KafkaBus(settings)
    await bus.start()
    try:
        await bus.ensure_topics(settings.all_topics())
        async for world in _world(settings, bus, Clock(T)):
            yield world
    finally:
        await bus.stop()


async def quiet_day(world: World) -> None:
    """One mention an hour for the 24 hours before T, each hour another template: how_to 3 times."""
    for h in range(1, 25):
        await world.route(T - h * HOUR + timedelta(minutes=5), 10 * h + h % 10)


async def burst(world: World, n: int, *, first: int = 0) -> None:
    for k in range(first, first + n):
        await world.route(T + timedelta(minutes=10 + k), 10 * (100 + k) + HOW_TO)


async def test_a_burst_raises_one_alert_published_listed_and_acknowledged(alert_world: World) -> None:
    world = alert_world
    await quiet_day(world)
    await world.route(T + timedelta(minutes=2), 10 * 99)  # one bug mention: below the minimum count
    assert await world.router.detect_spikes() == 0, "a quiet hour"
    await burst(world, 6)

    # Without the history it asks for, a detector raises nothing.
    strict = RouterService(
        settings=world.settings.model_copy(update={"alert_min_history_hours": 25}),
        bus=MemoryBus(),
        sessions=session_factory(world.engine),
        rules=RuleSet.from_file(world.settings.routing_file),
        clock=world.clock,
    )
    assert await strict.detect_spikes() == 0

    assert await world.router.detect_spikes() == 1
    [alert] = await world.alerts()
    assert (alert.kind, alert.topic, alert.department, alert.count) == ("spike", "how_to", "support", 6)
    assert (alert.window_start, alert.window_end) == (T, T + HOUR)
    assert alert.baseline_hours == 24 and alert.baseline == pytest.approx(3 / 24)
    assert alert.threshold == 5.0

    # Detected again in the same hour: the same alert, its count brought up to date, nothing published.
    assert await world.router.detect_spikes() == 0
    await burst(world, 3, first=6)
    assert await world.router.detect_spikes() == 0
    [again] = await world.alerts()
    assert (again.id, again.count, again.created_at) == (alert.id, 9, alert.created_at)
    assert await world.outbox() == 1

    assert await world.router.relay() == 1
    records = await read_topics(world.settings.kafka_bootstrap_servers, [world.settings.topic_alerts])
    assert len(records) == 1
    event = MentionAlert.model_validate_json(records[0].value)
    assert (event.alert_id, event.topic, event.count, event.window_start) == (alert.id, "how_to", 6, T)
    assert event.department is not None and event.department.value == "support"
    assert records[0].key == b"how_to"
    headers = dict(records[0].headers)
    assert headers["ce_type"] == b"io.mentionrouter.mention.alert.v1"
    assert headers["ce_id"] == f"spike:how_to:{T.isoformat()}".encode()

    # The API: support's keys see it, PR's does not; acknowledging needs write access.
    listed = (await world.get("/v1/alerts")).json()
    assert [(a["id"], a["topic"], a["count"], a["acknowledged_at"]) for a in listed["items"]] == [
        (alert.id, "how_to", 9, None)
    ]
    assert listed["items"][0]["ratio"] == pytest.approx(9 / (3 / 24), rel=1e-3)
    assert len((await world.get("/v1/alerts", "support")).json()["items"]) == 1
    assert (await world.get("/v1/alerts", "pr")).json()["items"] == []
    assert (await world.post(f"/v1/alerts/{alert.id}/acknowledge", "pr")).status_code == 404
    assert (await world.post(f"/v1/alerts/{alert.id}/acknowledge", "support")).status_code == 403
    done = await world.post(f"/v1/alerts/{alert.id}/acknowledge", "support-writer", **{"X-Actor": "ana"})
    assert done.status_code == 200, done.text
    assert done.json()["acknowledged_by"] == "ana" and done.json()["acknowledged_at"] is not None
    repeat = await world.post(f"/v1/alerts/{alert.id}/acknowledge")
    assert (repeat.json()["acknowledged_by"], repeat.json()["acknowledged_at"]) == (
        "ana",
        done.json()["acknowledged_at"],
    )
    assert (await world.get("/v1/alerts", acknowledged="false")).json()["items"] == []
    assert len((await world.get("/v1/alerts", acknowledged="true", topic="how_to")).json()["items"]) == 1
    assert (await world.get("/v1/alerts", topic="bug")).json()["items"] == []
    assert (await world.get("/v1/alerts", since=(T + HOUR).isoformat())).json()["items"] == []
    assert (await world.post("/v1/alerts/999999/acknowledge")).status_code == 404

    # The stats show the same count for the hour.
    stats = await world.get(
        "/v1/stats/mentions", topic="how_to", **{"from": T.isoformat(), "to": (T + HOUR).isoformat()}
    )
    assert [p["count"] for p in stats.json()["series"]] == [9]

    # The next hour starts quiet: nothing new.
    world.clock.now = T + HOUR + timedelta(minutes=30)
    assert await world.router.detect_spikes() == 0
    assert len(await world.alerts()) == 1


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_replicas_detecting_at_once_raise_each_alert_once(alert_world: World) -> None:
    world = alert_world
    await quiet_day(world)
    await burst(world, 7)
    replicas = [
        world.router,
        *(
            RouterService(
                settings=world.settings,
                bus=MemoryBus(),
                sessions=session_factory(world.engine),
                rules=RuleSet.from_file(world.settings.routing_file),
                clock=world.clock,
            )
            for _ in range(3)
        ),
    ]
    raised = await asyncio.gather(*(r.detect_spikes() for r in replicas))
    assert sorted(raised) == [0, 0, 0, 1]
    assert [(a.topic, a.count) for a in await world.alerts()] == [("how_to", 7)]
    assert await world.outbox() == 1
