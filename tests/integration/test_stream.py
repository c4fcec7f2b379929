"""GET /v1/stream through a real uvicorn server: Server-Sent Events read from real Kafka topics (and from
the in-memory bus of the embedded mode), resumed with Last-Event-ID, behind real keys in PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest
import uvicorn
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.records_to_delete import RecordsToDelete

from devsupport.factories import classified_event
from devsupport.processes import free_port
from services.api.app import create_app
from services.api.server import QuietSignalsServer
from services.api.stream import decode_event_id
from shared.apikeys import create_key, revoke
from shared.bus import MemoryBus, OutMessage
from shared.bus.base import partition_for
from shared.bus.codec import encode
from shared.bus.kafka import KafkaBus
from shared.db import create_engine, session_factory
from shared.events import Assignment, Department, MentionEscalated, MentionRouted, Priority
from shared.settings import DEPARTMENTS, BusKind, Settings
from tests.conftest import KafkaEnv

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

WITHIN = 60.0  # seconds before a test that waits for events gives up (a liveness bound, not a timing check)


# --- events -------------------------------------------------------------------------------------


def routed(settings: Settings, i: int, department: str) -> OutMessage:
    c = classified_event(i)
    event = MentionRouted(
        mention=c.mention,
        classification=c.classification,
        department=Department(department),
        assignment=Assignment(department=Department(department), priority=Priority.P2, sla_minutes=60),
        all_departments=[Department(department)],
        ingested_at=c.ingested_at,
    )
    return encode(
        topic=settings.topic_routed(department),
        key=c.mention.id,
        event=event,
        source="/test",
        event_id=f"{c.mention.id}:{department}",
    )


def escalated(settings: Settings, i: int, department: str) -> OutMessage:
    c = classified_event(i)
    now = datetime.now(UTC)
    event = MentionEscalated(
        mention_id=c.mention.id,
        department=Department(department),
        title=c.mention.title,
        status="new",
        previous_priority=Priority.P2,
        priority=Priority.P1,
        escalation_level=1,
        sla_due_at=now,
        escalated_at=now,
    )
    return encode(topic=settings.topic_routed(department), key=c.mention.id, event=event, source="/test")


# --- an SSE client --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    id: str
    event: str
    data: str


class SSE:
    """Reads events off a streaming httpx response, as EventSource would."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()
        self.retry: int | None = None
        self.comments: list[str] = []
        self.last_id = ""  # as EventSource keeps it: set by any block with an id, data or not

    async def next(self, *, until_comment: bool = False) -> Event | None:
        """The next event (or with `until_comment`, None at the next comment); None when the server
        ended the stream."""
        fields: dict[str, str] = {}
        async for line in self._lines:
            if line == "":
                if "id" in fields:
                    self.last_id = fields["id"]
                if "data" in fields:
                    return Event(
                        id=fields.get("id", ""), event=fields.get("event", "message"), data=fields["data"]
                    )
                continue
            if line.startswith(":"):
                self.comments.append(line)
                if until_comment:
                    return None
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "retry":
                self.retry = int(value)
            else:
                fields[name] = value
        return None

    async def opening(self) -> str:
        """Read the stream's first block (retry and id, no data); the last event id it set."""

        async def first() -> None:
            async for line in self._lines:
                if line == "":
                    return
                name, _, value = line.partition(":")
                if name == "retry":
                    self.retry = int(value.strip())
                elif name == "id":
                    self.last_id = value.removeprefix(" ")

        await asyncio.wait_for(first(), WITHIN)
        return self.last_id

    async def take(self, n: int) -> list[Event]:
        async def loop() -> list[Event]:
            out: list[Event] = []
            while len(out) < n:
                event = await self.next()
                if event is None:
                    raise AssertionError(f"the stream ended after {len(out)} of {n} events")
                out.append(event)
            return out

        return await asyncio.wait_for(loop(), WITHIN)


@asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient, *, headers: dict[str, str] | None = None, **params: str | list[str]
) -> AsyncIterator[SSE]:
    async with client.stream("GET", "/v1/stream", params=params, headers=headers) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        yield SSE(response)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def offsets_in(event_id: str) -> int:
    return sum(o for parts in decode_event_id(event_id).values() for o in parts.values())


# --- a real server --------------------------------------------------------------------------------


@dataclass
class Api:
    client: httpx.AsyncClient
    server: QuietSignalsServer
    task: asyncio.Task[None]
    settings: Settings


@asynccontextmanager
async def serve(settings: Settings, *, bus: MemoryBus | None = None) -> AsyncIterator[Api]:
    """The app on a free loopback port, served by the server `mention-router api` and `run` use."""
    engine = create_engine(settings.database_url)
    app = create_app(settings, engine=engine, bus=bus)
    port = free_port()
    server = QuietSignalsServer(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, log_level="info", lifespan="on")
    )
    task = asyncio.create_task(server.serve())

    async def started() -> None:
        while not server.started:
            if task.done():
                raise AssertionError(f"the server did not start: {task.exception()!r}")
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(started(), WITHIN)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=WITHIN) as client:
            yield Api(client=client, server=server, task=task, settings=settings)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, WITHIN)
        await engine.dispose()


async def make_key(settings: Settings, *scopes: str) -> tuple[str, str]:
    """A key with `scopes`: (the key, its id)."""
    engine = create_engine(settings.database_url)
    try:
        async with session_factory(engine)() as session:
            made = await create_key(
                session, name=f"test-{'-'.join(scopes)}", scopes=scopes, created_by="test"
            )
            await session.commit()
            return made.key, made.row.id
    finally:
        await engine.dispose()


@pytest.fixture
async def kafka_setup(kafka: KafkaEnv, pg_url: str) -> AsyncIterator[tuple[Settings, KafkaBus]]:
    """Settings for the API on the real broker and database, and a started bus to publish with."""
    settings = kafka.settings(database_url=pg_url, api_auth=True, stream_keepalive_s=0.5)
    bus = KafkaBus(settings)
    await bus.start()
    try:
        await bus.ensure_topics([settings.topic_routed(d) for d in DEPARTMENTS])
        yield settings, bus
    finally:
        await bus.stop()


# --- Kafka and PostgreSQL -------------------------------------------------------------------------


async def test_the_stream_carries_new_routed_and_escalated_mentions(
    kafka_setup: tuple[Settings, KafkaBus],
) -> None:
    settings, bus = kafka_setup
    key, _ = await make_key(settings, "read:support")
    await bus.send([routed(settings, i, "support") for i in range(3)])  # before the stream: not shown
    async with (
        serve(settings) as api,
        open_stream(api.client, headers=bearer(key), department="support") as sse,
    ):
        headers = sse.response.headers
        assert headers["content-type"].startswith("text/event-stream")
        assert headers["cache-control"].startswith("no-cache")
        assert headers["x-accel-buffering"] == "no"
        support = [routed(settings, i, "support") for i in range(10, 18)]
        support += [escalated(settings, i, "support") for i in (10, 11)]
        await bus.send(support + [routed(settings, i, "pr") for i in range(20, 25)])
        events = await sse.take(len(support))
        # Quiet now: keep-alive comments keep proxies from closing the connection.
        assert await asyncio.wait_for(sse.next(until_comment=True), WITHIN) is None
    assert sse.retry == 3000
    assert ": keep-alive" in sse.comments
    assert sorted(e.data for e in events) == sorted(m.value.decode() for m in support), "each once, as sent"
    assert sorted(e.event for e in events) == ["mention.escalated"] * 2 + ["mention.routed"] * 8
    # Each id is the position after its event: one more record each time, support's topic only.
    assert all(set(decode_event_id(e.id)) == {"support"} for e in events)
    assert [offsets_in(e.id) for e in events] == list(range(4, 4 + len(support)))
    # Within a partition (a mention's key), the order they were published in.
    for partition in range(settings.topic_partitions):
        sent = [
            m.value.decode() for m in support if partition_for(m.key, settings.topic_partitions) == partition
        ]
        got = [e.data for e in events if e.data in sent]
        assert got == sent


async def test_reconnecting_with_last_event_id_misses_nothing_and_repeats_nothing(
    kafka_setup: tuple[Settings, KafkaBus],
) -> None:
    settings, bus = kafka_setup
    key, _ = await make_key(settings, "read:support", "read:pr")
    first_batch = [routed(settings, i, d) for i in range(12) for d in ("support", "pr")]
    second_batch = [routed(settings, i, "support") for i in range(100, 110)]
    second_batch += [escalated(settings, i, "pr") for i in range(6)]
    everything = sorted(m.value.decode() for m in first_batch + second_batch)
    async with serve(settings) as api:
        # No department: every one the key may read (support and pr), one id for both.
        async with open_stream(api.client, headers=bearer(key)) as sse:
            await bus.send(first_batch)
            first = await sse.take(7)
        assert set(decode_event_id(first[-1].id)) == {"pr", "support"}
        await bus.send(second_batch)  # while the client is away
        async with open_stream(api.client, headers=bearer(key) | {"Last-Event-ID": first[-1].id}) as sse:
            second = await sse.take(len(everything) - 7)
        # An EventSource polyfill: the id and the key in the query string.
        async with open_stream(api.client, api_key=key, last_event_id=second[9].id) as sse:
            third = await sse.take(len(second) - 10)
    assert sorted(e.data for e in first + second) == everything
    assert sorted(e.data for e in third) == sorted(e.data for e in second[10:])
    assert [offsets_in(e.id) for e in first + second] == list(range(1, len(everything) + 1))


async def test_events_the_broker_no_longer_holds_are_skipped_to_the_earliest(
    kafka_setup: tuple[Settings, KafkaBus], kafka: KafkaEnv
) -> None:
    settings, bus = kafka_setup
    key, _ = await make_key(settings, "read:support")
    # One key, so one partition: offsets 0-7.
    sent = [dataclasses.replace(routed(settings, i, "support"), key="one-key") for i in range(8)]
    partition = partition_for("one-key", settings.topic_partitions)
    async with serve(settings) as api:
        async with open_stream(api.client, headers=bearer(key), department="support") as sse:
            await bus.send(sent)
            events = await sse.take(len(sent))
        assert [e.data for e in events] == [m.value.decode() for m in sent]
        assert decode_event_id(events[0].id) == {"support": {partition: 1}}
        # Retention took the first five.
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
        await admin.start()
        try:
            tp = TopicPartition(settings.topic_routed("support"), partition)
            await admin.delete_records({tp: RecordsToDelete(before_offset=5)})
        finally:
            await admin.close()
        # Resuming after the first event: what is gone is skipped, the rest comes once, in order.
        resume = bearer(key) | {"Last-Event-ID": events[0].id}
        async with open_stream(api.client, headers=resume, department="support") as sse:
            again = await sse.take(3)
    assert again == events[5:]


async def test_keys_decide_who_may_stream_what(kafka_setup: tuple[Settings, KafkaBus]) -> None:
    settings, _ = kafka_setup
    support_key, _ = await make_key(settings, "read:support")
    pr_key, _ = await make_key(settings, "read:pr")
    push_key, _ = await make_key(settings, "push")
    log_lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            log_lines.append(record.getMessage())

    access = logging.getLogger("uvicorn.access")
    handler = Collect()
    access.addHandler(handler)
    try:
        async with serve(settings) as api:
            c = api.client
            no_key = await c.get("/v1/stream", params={"department": "support"})
            assert no_key.status_code == 401
            assert no_key.headers["content-type"].startswith("application/problem+json")
            assert (
                await c.get("/v1/stream", params={"department": "support"}, headers=bearer(pr_key))
            ).status_code == 403
            assert (await c.get("/v1/stream", headers=bearer(push_key))).status_code == 403
            # The query-string key is this route's alone.
            assert (await c.get("/v1/mentions", params={"api_key": support_key})).status_code == 401
            async with open_stream(c, api_key=support_key, department="support") as sse:
                assert sse.response.status_code == 200
            for bad in ("nonsense", "support:0.1;support:1.2", "pr:0.3"):
                refused = await c.get(
                    "/v1/stream",
                    params={"department": "support"},
                    headers=bearer(support_key) | {"Last-Event-ID": bad},
                )
                assert refused.status_code == 422, bad
                assert refused.headers["content-type"].startswith("application/problem+json")
    finally:
        access.removeHandler(handler)
    streamed = [line for line in log_lines if "/v1/stream" in line and "api_key" in line]
    assert streamed and all("api_key=[redacted]" in line for line in streamed)
    assert not any(support_key in line for line in log_lines)


async def test_a_revoked_key_ends_its_open_stream(kafka_setup: tuple[Settings, KafkaBus]) -> None:
    settings, _ = kafka_setup
    settings = settings.model_copy(update={"stream_key_recheck_s": 0.2})
    key, key_id = await make_key(settings, "read:rnd")
    async with serve(settings) as api, open_stream(api.client, headers=bearer(key), department="rnd") as sse:
        engine = create_engine(settings.database_url)
        try:
            async with session_factory(engine)() as session:
                await revoke(session, key_id)
                await session.commit()
        finally:
            await engine.dispose()
        assert await asyncio.wait_for(sse.next(), WITHIN) is None, "the stream ends"
        assert sse.comments[-1] == ": the API key no longer allows this stream"


async def test_a_key_revoked_through_this_process_ends_its_open_streams_at_once(
    kafka_setup: tuple[Settings, KafkaBus],
) -> None:
    settings, _ = kafka_setup
    # The periodic check would come in an hour: a revocation through this process does not wait for it.
    settings = settings.model_copy(update={"stream_key_recheck_s": 3600.0})
    key, key_id = await make_key(settings, "read:rnd")
    admin, _ = await make_key(settings, "admin")
    async with serve(settings) as api, open_stream(api.client, headers=bearer(key), department="rnd") as sse:
        await sse.opening()
        assert (await api.client.delete(f"/v1/keys/{key_id}", headers=bearer(admin))).status_code == 204
        assert await asyncio.wait_for(sse.next(), WITHIN) is None, "the stream ends"
        assert sse.comments[-1] == ": the API key no longer allows this stream"


# --- scopes: what a department's key sees of an event -----------------------------------------------


def shared_mention(settings: Settings, i: int) -> OutMessage:
    """A mention routed to support and R&D, as support's copy: R&D's rule matched as well."""
    c = classified_event(i)
    event = MentionRouted(
        mention=c.mention,
        classification=c.classification,
        department=Department.SUPPORT,
        assignment=Assignment(
            department=Department.SUPPORT, priority=Priority.P2, sla_minutes=120, rules=["outage-to-both"]
        ),
        all_departments=[Department.RND, Department.SUPPORT],
        ingested_at=c.ingested_at,
        matched_rules=["outage-to-both", "crash-to-rnd"],
    )
    return encode(topic=settings.topic_routed("support"), key=c.mention.id, event=event, source="/test")


@pytest.mark.parametrize(
    ("scopes", "departments", "rules"),
    [
        (("read:support",), ["support"], ["outage-to-both"]),
        (("read:support", "read:pr"), ["support"], ["outage-to-both"]),
        (("read:support", "write:rnd"), ["rnd", "support"], ["outage-to-both"]),
        (("read:*",), ["rnd", "support"], ["outage-to-both", "crash-to-rnd"]),
        (("admin",), ["rnd", "support"], ["outage-to-both", "crash-to-rnd"]),
    ],
)
async def test_a_department_key_sees_only_its_departments_in_the_events(
    pg_url: str, scopes: tuple[str, ...], departments: list[str], rules: list[str]
) -> None:
    settings = Settings().model_copy(
        update={"bus": BusKind.MEMORY, "database_url": pg_url, "api_auth": True, "metrics_port": 0}
    )
    bus = MemoryBus(partitions=settings.topic_partitions)
    key, _ = await make_key(settings, *scopes)
    sent = shared_mention(settings, 7)
    async with (
        serve(settings, bus=bus) as api,
        open_stream(api.client, headers=bearer(key), department="support") as sse,
    ):
        await sse.opening()
        await bus.send([sent, escalated(settings, 7, "support")])
        routed_event, escalated_event = await sse.take(2)
    shown = MentionRouted.model_validate_json(routed_event.data)
    assert [d.value for d in shown.all_departments] == departments
    assert shown.matched_rules == rules
    assert shown.assignment.rules == ["outage-to-both"] and shown.mention.id == classified_event(7).mention.id
    if departments == ["rnd", "support"] and len(rules) == 2:
        assert routed_event.data == sent.value.decode(), "a key that may see everything gets it as sent"
    assert escalated_event.event == "mention.escalated"


# --- the embedded mode: in-memory bus and SQLite --------------------------------------------------


async def test_the_embedded_mode_streams_from_the_in_memory_bus(sqlite_url: str) -> None:
    settings = Settings().model_copy(
        update={"bus": BusKind.MEMORY, "database_url": sqlite_url, "api_auth": False, "stream_max_clients": 2}
    )
    bus = MemoryBus(partitions=settings.topic_partitions)
    sent = [routed(settings, i, "product") for i in range(10)] + [escalated(settings, 3, "product")]
    async with serve(settings, bus=bus) as api:
        documented = (await api.client.get("/openapi.json")).json()["paths"]["/v1/stream"]["get"]
        assert "text/event-stream" in documented["responses"]["200"]["content"]
        await bus.send([routed(settings, 99, "product")])  # before any stream: never shown
        # A client that loses its connection before the first event resumes from where its stream began:
        # the opening block sets EventSource's last event id.
        async with open_stream(api.client, department="product") as sse:
            began = await sse.opening()
        assert sse.retry == 3000
        await bus.send(sent[:6])
        async with open_stream(api.client, department="product", last_event_id=began) as sse:
            first = await sse.take(4)
        async with open_stream(api.client, department="product", last_event_id=first[-1].id) as sse:
            await bus.send(sent[6:])
            second = await sse.take(len(sent) - 4)
        assert sorted(e.data for e in first + second) == sorted(m.value.decode() for m in sent)

        # At most `stream_max_clients` at once per process; shutting down ends the open ones.
        async with open_stream(api.client) as one, open_stream(api.client, department="pr") as two:
            full = await api.client.get("/v1/stream")
            assert full.status_code == 503
            assert full.headers["retry-after"]
            api.server.should_exit = True
            await asyncio.wait_for(api.task, WITHIN)
            assert await asyncio.wait_for(one.next(), WITHIN) is None
            assert await asyncio.wait_for(two.next(), WITHIN) is None
