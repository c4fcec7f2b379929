"""Prometheus metrics on the real broker and database: a running classifier process serves /metrics,
/healthz and /readyz on its metrics port and its counters follow what it consumed, produced and
dead-lettered; the Kafka consumer reports its lag per partition; ingest counts what it publishes;
the API reports queue sizes and SLA breaches on its metrics port, computed in the background, through a
database outage."""

from __future__ import annotations

import asyncio
import contextlib
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
from sqlalchemy import make_url, select, update

from devsupport.apiclient import api_client
from devsupport.factories import classified_event, make_entries, rss
from devsupport.feedserver import FeedServer
from devsupport.kafka import partitions
from devsupport.scenario import wait_for
from devsupport.tcpproxy import TcpProxy
from services.api.metrics import QueueGauges
from services.ingest.service import IngestService
from services.router.service import RouterService
from shared import metrics
from shared.bus import MemoryBus
from shared.bus.base import OutMessage, Record
from shared.bus.codec import encode
from shared.bus.kafka import KafkaBus
from shared.db import AssignmentRow, create_engine, session_factory
from shared.events import MentionIngested, utcnow
from shared.metrics import MetricsServer
from shared.routing import RuleSet
from shared.settings import REPO_ROOT, BusKind, Settings
from shared.sources import SourceSpec, add_source
from tests.conftest import KafkaEnv

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
    port = _free_port()
    settings = Settings().model_copy(
        update={
            "database_url": pg_url,
            "bus": BusKind.MEMORY,
            "metrics_host": "127.0.0.1",
            "metrics_port": port,
            "metrics_business_interval_s": 1.0,
        }
    )
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
            assert len(ids) >= 4, "the router stored too few assignments"
            # Four past their SLA: two waiting for a response, one resolved and one responded (neither of
            # which waits for a first response any more).
            late, resolved, responded = ids[:4], ids[2], ids[3]
            await session.execute(
                update(AssignmentRow)
                .where(AssignmentRow.id.in_(late))
                .values(sla_due_at=utcnow() - timedelta(minutes=5))
            )
            await session.execute(
                update(AssignmentRow).where(AssignmentRow.id == resolved).values(status="resolved")
            )
            await session.execute(
                update(AssignmentRow)
                .where(AssignmentRow.id == responded)
                .values(status="responded", first_response_at=utcnow())
            )
        async with (
            api_client(settings, engine=engine) as api,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as scraper,
        ):
            # Not on the API's port, and only /metrics on the metrics port.
            assert (await api.get("/metrics")).status_code == 404
            assert (await scraper.get("/healthz")).status_code == 404
            samples: Samples = {}

            async def computed() -> bool:
                nonlocal samples
                response = await scraper.get("/metrics")
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/plain")
                samples = parse(response.text)
                return value(samples, "mr_business_metrics_updated_timestamp_seconds") > 0

            await wait_for(computed, within=30, what="the queue gauges computed in the background")
            queues = (await api.get("/v1/queues")).json()["departments"]
            async with session_factory(engine)() as session:
                late_departments = (
                    await session.scalars(
                        select(AssignmentRow.department).where(AssignmentRow.id.in_(late[:2]))
                    )
                ).all()
        for q in queues:
            for status, n in q["by_status"].items():
                assert value(samples, "mr_queue_assignments", department=q["department"], status=status) == n
        queued = sum(v for (name, _), v in samples.items() if name == "mr_queue_assignments")
        assert queued == sum(q["total"] for q in queues) == len(ids)
        expected_late = Counter(late_departments)
        for department in ("marketing", "pr", "support", "rnd", "product"):
            got = value(samples, "mr_sla_overdue_assignments", department=department)
            assert got == expected_late.get(department, 0), department
            assert got == next(q["overdue"] for q in queues if q["department"] == department)
        # The process's pipeline metrics are served alongside (the router above ran in this process).
        assert any(name == "mr_messages_in_total" for name, _ in samples)
        assert "/metrics" not in (await _openapi_paths(api.app))
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_queue_gauges_survive_a_database_outage_and_scrapes_never_wait_for_it(pg_url: str) -> None:
    url = make_url(pg_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    engine = create_engine(url.set(port=proxy.port).render_as_string(hide_password=False))
    gauges = QueueGauges(session_factory(engine), interval_s=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(gauges.run(stop))
    try:
        async with (
            MetricsServer(
                host="127.0.0.1", port=0, ready=lambda: True, collect=gauges.exposition, probes=False
            ) as server,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=5) as http,
        ):

            async def scrape() -> Samples:
                return parse((await http.get("/metrics")).text)

            async def updated() -> float:
                return value(await scrape(), "mr_business_metrics_updated_timestamp_seconds")

            async def first_round() -> bool:
                return await updated() > 0

            await wait_for(first_round, within=30, what="a first round")
            await proxy.cut()
            errors = value(await scrape(), "mr_business_metrics_errors_total")

            async def failing() -> bool:
                return value(await scrape(), "mr_business_metrics_errors_total") >= errors + 2

            await wait_for(failing, within=60, what="rounds failing while the database is away")
            stale = await updated()
            # The scrape answers from the last values, the task goes on.
            samples = await scrape()
            assert ("mr_queue_assignments", (("department", "support"), ("status", "new"))) in samples
            assert not task.done()
            await proxy.restore()

            async def recovered() -> bool:
                return await updated() > stale

            await wait_for(recovered, within=60, what="the gauges computed again after the outage")
            assert not task.done()
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await proxy.cut()
        await engine.dispose()


@pytest.mark.postgres
async def test_a_round_of_queue_gauges_is_bounded_when_the_database_hangs(pg_url: str) -> None:
    writers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)  # accepts the connection and never answers

    listener = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    engine = create_engine(make_url(pg_url).set(port=port).render_as_string(hide_password=False))
    gauges = QueueGauges(session_factory(engine), interval_s=0.5)
    stop = asyncio.Event()
    task = asyncio.create_task(gauges.run(stop))
    try:

        async def given_up() -> bool:
            return (gauges.registry.get_sample_value("mr_business_metrics_errors_total") or 0) >= 2

        await wait_for(given_up, within=30, what="two rounds abandoned while the database hangs")
        assert not task.done()
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        listener.close()
        for writer in writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        await engine.dispose()


async def _openapi_paths(app: object) -> set[str]:
    from fastapi import FastAPI

    assert isinstance(app, FastAPI)
    return set(app.openapi()["paths"])
