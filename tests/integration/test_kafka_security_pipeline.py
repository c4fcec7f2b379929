"""The whole pipeline on the secured broker, every service as its own principal (SCRAM over TLS, the
ACLs of shared/kafkaacl.py enforced by the broker), and each department's consumer reading its own
topic as its own user: nothing lost, and the same results as the same input on the plaintext broker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable

import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy import select

from devsupport.apiclient import api_client
from devsupport.factories import make_entries, rss
from devsupport.feedserver import FeedServer
from devsupport.kafka import end_offsets_total
from devsupport.scenario import wait_for
from devsupport.securekafka import SecureKafka
from devsupport.sources import register
from services.classifier.bootstrap import build as build_classifier
from services.ingest.bootstrap import build as build_ingest
from services.router.bootstrap import build as build_router
from shared.bus.kafka import KafkaBus
from shared.canonical import canonical_url
from shared.db import AssignmentRow, MentionRow, create_engine, migrate
from shared.kafkaauth import client_options
from shared.settings import DEPARTMENTS, Settings
from shared.sources import SourceSpec
from shared.topics import create_topics
from tests.conftest import KafkaEnv

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

FEEDS, PER_FEED, PUSHED = 3, 20, 10
# Departments -> set of departments, per mention URL (the same in both runs; mention ids are not: they
# hang on the source ids each run registers).
Results = dict[str, frozenset[str]]


@contextlib.asynccontextmanager
async def _database(server_url: str) -> AsyncIterator[str]:
    from bench.infra import create_database, drop_database

    name = f"mr_sec_{uuid.uuid4().hex[:12]}"
    url = await create_database(server_url, name)
    try:
        await migrate(url)
        yield url
    finally:
        await drop_database(server_url, name)


def _pushed(i: int) -> dict[str, object]:
    texts = [
        "The Tessellate app crashed again when I exported my project, this is the third time",
        "Love the new Tessellate pricing page, switching the whole team over next month",
        "Journalists are asking Tessellate's CEO about the data breach rumours",
    ]
    return {
        "source": "mastodon",
        "url": f"https://social.example/@dana/{2000 + i}",
        "text": f"{texts[i % len(texts)]} (#{i})",
        "author": "@dana",
        "external_id": f"post-{i}",
        "published_at": "2026-11-20T10:00:00+01:00",
    }


async def _stored(url: str) -> tuple[set[str], Results]:
    """The URLs of the stored mentions, and the departments of each one assigned, from one snapshot (the
    router may commit a batch between the two reads: an assignment of a mention the first did not see)."""
    engine = create_engine(url)
    try:
        async with engine.connect() as plain:
            conn = await plain.execution_options(isolation_level="REPEATABLE READ")
            urls = dict((await conn.execute(select(MentionRow.id, MentionRow.url))).all())
            rows = (await conn.execute(select(AssignmentRow.mention_id, AssignmentRow.department))).all()
    finally:
        await engine.dispose()
    found: dict[str, set[str]] = defaultdict(set)
    for mention, department in rows:
        found[urls[mention]].add(department)
    return set(urls.values()), {u: frozenset(d) for u, d in found.items()}


async def _department_reads(settings: Settings, department: str, *, want: int) -> list[str]:
    """The mention URLs on `mentions.routed.<department>`, read by that department's own consumer."""
    consumer = AIOKafkaConsumer(
        settings.topic_routed(department),
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=f"{settings.topic_prefix}{department}.dashboard",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **client_options(settings),
    )
    await consumer.start()
    try:
        urls: list[str] = []
        deadline = time.monotonic() + 30
        while len(urls) < want and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            urls += [json.loads(r.value)["mention"]["url"] for rs in batch.values() for r in rs if r.value]
        await consumer.commit()
        return urls
    finally:
        await consumer.stop()


async def _push(settings: Settings) -> None:
    async with api_client(settings) as api:
        response = await api.post("/v1/mentions", json=[_pushed(i) for i in range(PUSHED)])
        assert response.status_code == 202, response.text


async def _run(
    settings_of: Callable[[str], Settings], admin: Settings, server: FeedServer, security: dict[str, object]
) -> tuple[Results, Results, int]:
    """Ingest (feeds), the API (pushed posts), classifier and router, each with the settings (the
    principal) `settings_of` gives it; then the departments' consumers. (stored, on the topics, DLQ size)."""
    await create_topics(admin)
    for i in range(FEEDS):
        await register(
            admin, SourceSpec(name=f"Feed {i}", url=server.url(f"/feeds/{i}.xml"), kind="feed", influence=1)
        )
    buses = {s: KafkaBus(settings_of(s)) for s in ("ingest", "classifier", "router")}
    engine = create_engine(admin.database_url)
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        for service, bus in buses.items():
            await bus.start()
            await bus.verify_access(service)
        tasks.append(
            asyncio.create_task(
                build_classifier(settings_of("classifier"), bus=buses["classifier"]).run(stop)
            )
        )
        tasks.append(
            asyncio.create_task(
                build_router(settings_of("router"), bus=buses["router"], engine=engine).run(stop)
            )
        )
        assert (
            await build_ingest(settings_of("ingest"), bus=buses["ingest"], engine=engine).poll_all()
            == FEEDS * PER_FEED
        )
        await _push(settings_of("api"))

        async def all_stored() -> bool:
            return len((await _stored(admin.database_url))[0]) >= FEEDS * PER_FEED + PUSHED

        await wait_for(all_stored, within=90, what="every mention stored")
    finally:
        stop.set()
        for task in tasks:
            await asyncio.wait_for(task, 30)
        for bus in buses.values():
            await bus.stop()
        await engine.dispose()
    urls, stored = await _stored(admin.database_url)
    assert len(urls) == FEEDS * PER_FEED + PUSHED
    assert {canonical_url(str(_pushed(i)["url"])) for i in range(PUSHED)} <= urls
    routed: dict[str, set[str]] = defaultdict(set)
    for department in DEPARTMENTS:
        want = sum(department in d for d in stored.values())
        urls = await _department_reads(settings_of(f"dept-{department}"), department, want=want)
        assert len(urls) == len(set(urls)) == want, department
        for url in urls:
            routed[url].add(department)
    dlq = await end_offsets_total(admin.kafka_bootstrap_servers, admin.topic_dlq, **security)
    return stored, {u: frozenset(d) for u, d in routed.items()}, dlq


async def test_the_secured_pipeline_loses_nothing_and_routes_as_the_plaintext_one(
    secure_kafka: SecureKafka, kafka: KafkaEnv, postgres_server_url: str, server: FeedServer
) -> None:
    feeds = [make_entries(PER_FEED, prefix=f"sec{i}", seed=i) for i in range(FEEDS)]
    for i, entries in enumerate(feeds):
        server.serve(f"/feeds/{i}.xml", rss(entries, title=f"Feed {i}"), content_type="application/rss+xml")
    expected = {canonical_url(e.link) for entries in feeds for e in entries}
    runs: dict[str, tuple[Results, Results, int]] = {}
    common = {"ingest_allowed_networks": "127.0.0.1", "classifier_engine": "rules"}

    async with _database(postgres_server_url) as url:
        users = {"ingest": "mr-ingest", "classifier": "mr-classifier", "router": "mr-router", "api": "mr-api"}

        def secured(who: str) -> Settings:
            return secure_kafka.settings(users.get(who, who), database_url=url, **common)

        runs["secured"] = await _run(
            secured, secure_kafka.settings(database_url=url, **common), server, secure_kafka.security()
        )
    async with _database(postgres_server_url) as url:

        def plaintext(_who: str) -> Settings:
            return kafka.settings(database_url=url, **common)

        runs["plaintext"] = await _run(plaintext, plaintext("admin"), server, {})

    for name, (stored, routed, dlq) in runs.items():
        assert dlq == 0, name
        assert routed == stored, f"{name}: the department topics and the database disagree"
        assert expected <= stored.keys(), f"{name}: feed entries lost"
    assert runs["secured"][0] == runs["plaintext"][0]
