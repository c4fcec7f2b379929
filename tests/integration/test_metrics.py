"""Prometheus metrics on the real broker and database: a running classifier process serves /metrics,
/healthz and /readyz on its metrics port and its counters follow what it consumed, produced and
dead-lettered; the Kafka consumer reports its lag per partition; ingest counts what it publishes;
the API's /metrics reports queue sizes and SLA breaches from PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, update

from services.api.app import create_app
from services.ingest.service import IngestService
from services.router.service import RouterService
from shared import metrics
from shared.bus import MemoryBus
from shared.bus.base import OutMessage, Record
from shared.bus.codec import encode
from shared.bus.kafka import KafkaBus
from shared.db import AssignmentRow, create_engine, session_factory
from shared.events import MentionIngested, utcnow
from shared.routing import RuleSet
from shared.settings import REPO_ROOT, BusKind, Settings
from shared.sources import SourceSpec, add_source
from tests.conftest import KafkaEnv
from tests.support.factories import classified_event, make_entries, rss
from tests.support.feedserver import FeedServer
from tests.support.kafka import partitions
from tests.support.scenario import wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """{(sample name, sorted labels): value} of a Prometheus text exposition."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _sample(name: str, **labels: str) -> float:
    """A sample of this process's registry (0 when absent)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def classifier_process(
    kafka: KafkaEnv, tmp_path: Path
) -> Iterator[tuple[int, subprocess.Popen[bytes], Path]]:
    port = _free_port()
    env = {
        **os.environ,
        "MR_BUS": "kafka",
        "MR_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "MR_TOPIC_PREFIX": kafka.prefix,
        "MR_TOPIC_PARTITIONS": "2",
        "MR_METRICS_HOST": "127.0.0.1",
        "MR_METRICS_PORT": str(port),
        "PYTHONUNBUFFERED": "1",
    }
    log = tmp_path / "classifier.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.classifier"], cwd=REPO_ROOT, env=env, stdout=out, stderr=out
        )
        try:
            yield port, proc, log
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@pytest.mark.kafka
async def test_running_classifier_serves_metrics_that_follow_its_work(
    kafka: KafkaEnv, classifier_process: tuple[int, subprocess.Popen[bytes], Path]
) -> None:
    port, proc, log = classifier_process
    base = f"http://127.0.0.1:{port}"
    settings = kafka.settings(topic_partitions=2)
    async with httpx.AsyncClient(base_url=base, timeout=5) as http:

        async def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"the classifier exited with {proc.returncode}:\n{log.read_text()}")
            try:
                return (await http.get("/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_for(ready, within=60, what="the classifier's /readyz", interval=0.2)
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        assert (await http.get("/nothing-here")).status_code == 404
        before = parse((await http.get("/metrics")).text)
        # Created at zero when the stage starts, so that rate() sees the first increment.
        assert ("mr_messages_in_total", (("stage", "classifier"),)) in before
        assert value(before, "mr_messages_in_total", stage="classifier") == 0

        bus = KafkaBus(settings)
        await bus.start()
        try:
            await bus.ensure_topics(settings.all_topics())
            good = [
                encode(
                    topic=settings.topic_raw,
                    key=e.mention.id,
                    event=MentionIngested(mention=e.mention),
                    source="/t",
                )
                for e in (classified_event(i) for i in range(30))
            ]
            poison = [OutMessage(topic=settings.topic_raw, key="poison", value=b"\xff not json")]
            await bus.send(good[:15] + poison + good[15:])
        finally:
            await bus.stop()

        samples: Samples = {}

        async def counted() -> bool:
            nonlocal samples
            samples = parse((await http.get("/metrics")).text)
            return value(samples, "mr_messages_in_total", stage="classifier") >= 31

        await wait_for(counted, within=60, what="the classifier to count 31 messages in", interval=0.3)
        assert value(samples, "mr_messages_in_total", stage="classifier") == 31
        assert value(samples, "mr_messages_out_total", stage="classifier") == 30
        assert value(samples, "mr_dead_letters_total", stage="classifier") == 1
        assert value(samples, "mr_batch_duration_seconds_count", stage="classifier") >= 1
        assert value(samples, "mr_batch_records_sum", stage="classifier") == 31

        raw = [tp.partition for tp in await partitions(kafka.bootstrap, [settings.topic_raw])]
        assert len(raw) == 2

        async def caught_up() -> bool:
            nonlocal samples
            samples = parse((await http.get("/metrics")).text)
            lags = [
                samples.get(
                    (
                        "mr_consumer_lag",
                        (("partition", str(p)), ("stage", "classifier"), ("topic", settings.topic_raw)),
                    )
                )
                for p in raw
            ]
            return all(lag == 0 for lag in lags)

        await wait_for(caught_up, within=30, what="a lag of 0 on both partitions", interval=0.3)
        # The process's own collectors come along (memory, CPU) for the resource dashboards.
        assert any(name == "process_resident_memory_bytes" for name, _ in samples)

    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 20) == 0


@pytest.mark.kafka
async def test_consumer_reports_lag_per_partition(kafka: KafkaEnv) -> None:
    settings = kafka.settings(topic_partitions=1)
    topic = settings.topic_raw
    bus = KafkaBus(settings)
    await bus.start()
    consumer = bus.consumer([topic], group_id=settings.group("lag-test"))
    try:
        await bus.ensure_topics([topic])
        await bus.send([OutMessage(topic=topic, key=f"k{i}", value=b"{}") for i in range(10)])
        await consumer.start()
        got: list[Record] = []
        for _ in range(50):
            got = await consumer.getmany(timeout_ms=500, max_records=4)
            if got:
                break
        assert len(got) == 4
        assert await consumer.lag() == {(topic, 0): 6}
        await metrics.observe_lag("lag-test", consumer, force=True)
        assert _sample("mr_consumer_lag", stage="lag-test", topic=topic, partition="0") == 6
    finally:
        await consumer.stop()
        await bus.stop()


@pytest.mark.kafka
@pytest.mark.postgres
async def test_ingest_counts_entries_in_and_mentions_out(
    kafka: KafkaEnv, pg_url: str, server: FeedServer
) -> None:
    settings = kafka.settings(database_url=pg_url, ingest_allowed_networks="127.0.0.1")
    server.serve("/feed.xml", rss(make_entries(12, prefix="metrics")), content_type="application/rss+xml")
    engine = create_engine(pg_url)
    bus = KafkaBus(settings)
    await bus.start()
    try:
        await bus.ensure_topics([settings.topic_raw])
        async with session_factory(engine)() as session:
            await add_source(session, SourceSpec(name="m", url=server.url("/feed.xml"), kind="feed"))
            await session.commit()
        ingest = IngestService(settings=settings, bus=bus, sessions=session_factory(engine))
        entries_in = _sample("mr_messages_in_total", stage="ingest")
        out = _sample("mr_messages_out_total", stage="ingest")
        assert await ingest.poll_all() == 12
        assert _sample("mr_messages_in_total", stage="ingest") - entries_in == 12
        assert _sample("mr_messages_out_total", stage="ingest") - out == 12
        # A second poll sees the same 12 entries (or a 304) and publishes nothing.
        assert await ingest.poll_all() == 0
        assert _sample("mr_messages_out_total", stage="ingest") - out == 12
    finally:
        await bus.stop()
        await engine.dispose()


@pytest.mark.postgres
async def test_api_metrics_report_queues_and_sla_breaches(pg_url: str) -> None:
    settings = Settings().model_copy(update={"database_url": pg_url, "bus": BusKind.MEMORY})
    engine = create_engine(pg_url)
    try:
        router = RouterService(
            settings=settings,
            bus=MemoryBus(),
            sessions=session_factory(engine),
            rules=RuleSet.from_file(settings.routing_file),
        )
        events = [classified_event(i) for i in range(20)]
        messages = [encode(topic="t", key=e.mention.id, event=e, source="/t") for e in events]
        await router.handle(
            [
                Record(topic="t", partition=0, offset=i, key=m.key, value=m.value)
                for i, m in enumerate(messages)
            ]
        )
        async with session_factory(engine)() as session, session.begin():
            ids = sorted((await session.scalars(select(AssignmentRow.id))).all())
            assert len(ids) >= 3, "the router stored too few assignments"
            # Three overdue: two still open, one resolved (which no longer counts against the SLA).
            late, resolved = ids[:3], ids[2]
            await session.execute(
                update(AssignmentRow)
                .where(AssignmentRow.id.in_(late))
                .values(sla_due_at=utcnow() - timedelta(minutes=5))
            )
            await session.execute(
                update(AssignmentRow).where(AssignmentRow.id == resolved).values(status="resolved")
            )
        app = create_app(settings, engine=engine)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as api:
                response = await api.get("/metrics")
                queues = (await api.get("/v1/queues")).json()["departments"]
                async with session_factory(engine)() as session:
                    late_departments = (
                        await session.scalars(
                            select(AssignmentRow.department).where(AssignmentRow.id.in_(late[:2]))
                        )
                    ).all()
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        samples = parse(response.text)
        for q in queues:
            for status, n in q["by_status"].items():
                assert value(samples, "mr_queue_assignments", department=q["department"], status=status) == n
        queued = sum(v for (name, _), v in samples.items() if name == "mr_queue_assignments")
        assert queued == sum(q["total"] for q in queues) == len(ids)
        expected_late = Counter(late_departments)
        for department in ("marketing", "pr", "support", "rnd", "product"):
            got = value(samples, "mr_sla_overdue_assignments", department=department)
            assert got == expected_late.get(department, 0), department
        # The process's pipeline metrics are served alongside (the router above ran in this process).
        assert any(name == "mr_messages_in_total" for name, _ in samples)
        assert "/metrics" not in (await _openapi_paths(app))
    finally:
        await engine.dispose()


async def _openapi_paths(app: object) -> set[str]:
    from fastapi import FastAPI

    assert isinstance(app, FastAPI)
    return set(app.openapi()["paths"])
