"""The fault-injection harness: the services as separate processes on a broker and a database, a stream of
mentions, and the delivery checks afterwards.

The checks, for every mention sent: stored exactly once (by id), each assignment the routing rules give
it stored exactly once, and a routed event on each of its department topics at least once. The expected
departments are computed here by the same classifier engine and routing rules the services load, so the
checks follow the rules whatever they decide.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import GroupCoordinatorNotAvailableError
from sqlalchemy.engine import make_url

from bench.generate import generate
from bench.infra import delete_topics
from devsupport.kafka import end_offsets_total, read_topics
from devsupport.processes import ServiceProcesses, free_port
from shared.bus.base import OutMessage
from shared.classify import RuleEngine, Taxonomy
from shared.events import Mention, MentionIngested
from shared.routing import RuleSet
from shared.settings import DEPARTMENTS, REPO_ROOT, BusKind, Settings

PARTITIONS = 4
# What asyncpg raises while the server is stopped, shutting down or restarting, or the connection was cut.
_UNREACHABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.InterfaceError,
)


@dataclass
class Outcome:
    """One fault's figures; `problems()` lists what breaks the delivery guarantees."""

    fault: str
    sent: int
    stored: int = 0
    duplicated_rows: int = 0
    lost: int = 0
    unexpected: int = 0
    assignments_expected: int = 0
    assignments_stored: int = 0
    duplicated_assignments: int = 0
    lost_assignments: int = 0
    unexpected_assignments: int = 0
    routed_events: int = 0
    missing_on_topics: int = 0
    duplicates_on_topics: int = 0
    dead_lettered: int = 0
    seconds: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)

    def problems(self) -> list[str]:
        out = []
        for name in (
            "duplicated_rows",
            "lost",
            "unexpected",
            "duplicated_assignments",
            "lost_assignments",
            "unexpected_assignments",
            "missing_on_topics",
        ):
            if getattr(self, name):
                out.append(f"{name}={getattr(self, name)}")
        return out

    def assert_delivered(self) -> None:
        problems = self.problems()
        assert not problems, f"{self.fault}: {', '.join(problems)}\n{json.dumps(asdict(self), indent=1)}"


REPORT: list[Outcome] = []


def expected_departments(mentions: Iterable[Mention], settings: Settings) -> dict[str, frozenset[str]]:
    """What the routing rules decide for each mention, classified by the rule engine the services use."""
    taxonomy = Taxonomy.from_file(settings.taxonomy_file)
    engine = RuleEngine(taxonomy)
    rules = RuleSet.from_file(settings.routing_file, known_topics=taxonomy.topics)
    out: dict[str, frozenset[str]] = {}
    for m in mentions:
        decision = rules.evaluate(m, engine.classify(m))
        out[m.id] = frozenset(d.value for d in decision.departments)
    return out


def generated(n: int, *, settings: Settings, run_id: str) -> tuple[list[OutMessage], list[Mention]]:
    """`n` realistic MentionIngested messages for the raw topic, and their mentions."""
    items = generate(n, run_id=run_id, topic=settings.topic_raw)
    messages = [g.message for g in items]
    mentions = [MentionIngested.model_validate_json(m.value).mention for m in messages]
    return messages, mentions


class Database:
    """A counting connection (asyncpg, not through the services' code) that survives a server restart."""

    def __init__(self, url: str) -> None:
        self._url = make_url(url)
        self._conn: Any = None

    async def _connection(self) -> Any:
        if self._conn is None or self._conn.is_closed():
            u = self._url
            self._conn = await asyncpg.connect(
                host=u.host, port=u.port, user=u.username, password=u.password, database=u.database, timeout=5
            )
        return self._conn

    async def fetch(self, query: str, *args: object) -> list[Any]:
        conn = await self._connection()
        try:
            return list(await conn.fetch(query, *args))
        except Exception:
            with contextlib.suppress(Exception):
                await conn.close(timeout=1)
            self._conn = None
            raise

    async def count(self, query: str = "SELECT count(*) FROM mentions") -> int | None:
        """The count, or None while the server cannot be reached (refused, shutting down, restarting)."""
        try:
            rows = await self.fetch(query)
        except _UNREACHABLE:
            return None
        return int(rows[0][0])

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close(timeout=2)
            self._conn = None


class FaultPipeline:
    """The services of one fault test, on their own topic prefix and database."""

    def __init__(self, *, bootstrap: str, database_url: str, prefix: str, logs: Path, **env: str) -> None:
        self.settings = Settings().model_copy(
            update={
                "bus": BusKind.KAFKA,
                "kafka_bootstrap_servers": bootstrap,
                "topic_prefix": prefix,
                "database_url": database_url,
            }
        )
        self.env = {
            **os.environ,
            "MR_BUS": "kafka",
            "MR_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "MR_TOPIC_PREFIX": prefix,
            "MR_TOPIC_PARTITIONS": str(PARTITIONS),
            "MR_DATABASE_URL": database_url,
            "MR_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.logs = logs
        self.procs = ServiceProcesses(self.env, logs)
        self.db = Database(database_url)
        self.started = time.monotonic()

    @property
    def bootstrap(self) -> str:
        return self.settings.kafka_bootstrap_servers

    async def create_topics(self, configs: dict[str, dict[str, str]] | None = None) -> None:
        """Every topic of the pipeline, `configs` (by topic name without the prefix) applied."""
        configs = configs or {}
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            prefix = self.settings.topic_prefix
            response: Any = await admin.create_topics(
                [
                    NewTopic(
                        name=t,
                        num_partitions=PARTITIONS,
                        replication_factor=1,
                        topic_configs=configs.get(t.removeprefix(prefix), {}),
                    )
                    for t in self.settings.all_topics()
                ]
            )
            for error in response.topic_errors:
                assert error[1] in (0, 36), f"could not create {error[0]}: error code {error[1]}"
        finally:
            await admin.close()

    def start(self, service: str, name: str | None = None, **env: str) -> str:
        name = name or service
        # Every service serves its metrics on a port of its own, the API too.
        env.setdefault("MR_METRICS_PORT", str(free_port()))
        self.procs.start(service, name, **env)
        return name

    def cli(self, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
        """`mention-router ARGS` against this pipeline's broker and database."""
        return subprocess.run(
            [sys.executable, "-m", "services.cli", *args],
            cwd=REPO_ROOT,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def producer(self, **options: Any) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            max_request_size=4 * 1024 * 1024,
            **options,
        )

    async def send(
        self,
        messages: Sequence[OutMessage],
        *,
        rate: float | None = None,
        during: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        """Publish `messages` (all at once, or `rate` per second on a fixed schedule), each acknowledged.
        `during(i)` runs after every 100th message: where a test injects its fault mid-stream."""
        prod = self.producer()
        await prod.start()
        try:
            futures = []
            t0 = time.monotonic()
            for i, m in enumerate(messages):
                if rate is not None:
                    delay = t0 + i / rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                futures.append(
                    await prod.send(
                        m.topic,
                        value=m.value,
                        key=m.key.encode(),
                        headers=[(k, v.encode()) for k, v in m.headers.items()],
                    )
                )
                if during is not None and i % 100 == 99:
                    await during(i + 1)
            await asyncio.gather(*futures)
        finally:
            await prod.stop()

    async def stored(self) -> int | None:
        return await self.db.count()

    async def committed_offsets(self, service: str, topic: str) -> dict[int, int]:
        """Per partition of `topic`, the offset `service`'s consumer group has committed."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(self.settings.group(service))
        except GroupCoordinatorNotAvailableError:
            return {}  # a new broker: the offsets topic is still being created
        finally:
            await admin.close()
        return {tp.partition: max(0, meta.offset) for tp, meta in offsets.items() if tp.topic == topic}

    async def committed(self, service: str, topic: str) -> int:
        """The offsets `service`'s consumer group has committed on `topic`, summed over partitions."""
        return sum((await self.committed_offsets(service, topic)).values())

    async def keys_below(self, topic: str, offsets: dict[int, int]) -> set[str]:
        """The keys of `topic`'s records below `offsets` (per partition): what a group has committed."""
        records = await read_topics(self.bootstrap, [topic])
        return {r.key.decode() for r in records if r.key and r.offset < offsets.get(r.partition, 0)}

    async def assert_committed_is_durable(self) -> None:
        """Every record below a group's committed offsets has its output durable: classified on
        `mentions.classified` (classifier), stored in the database (router). The offsets are read before
        the outputs: a stage still running commits only what it has published or stored already."""
        s = self.settings
        raw_done = await self.committed_offsets("classifier", s.topic_raw)
        routed_done = await self.committed_offsets("router", s.topic_classified)
        classified = {
            r.key.decode() for r in await read_topics(self.bootstrap, [s.topic_classified]) if r.key
        }
        stored = await self.stored_ids()
        done = await self.keys_below(s.topic_raw, raw_done)
        assert done <= classified, f"{len(done - classified)} committed by the classifier but not published"
        routed = await self.keys_below(s.topic_classified, routed_done)
        assert routed <= stored, f"{len(routed - stored)} committed by the router but not stored"

    async def stored_ids(self) -> set[str]:
        return {r["id"] for r in await self.db.fetch("SELECT id FROM mentions")}

    async def wait_committed_at_least(self, service: str, topic: str, n: int, *, within: float) -> int:
        """Until `service` has committed at least `n` records of `topic` (a point mid-stream)."""
        deadline = time.monotonic() + within
        while True:
            self.procs.check_alive()
            done = await self.committed(service, topic)
            if done >= n:
                return done
            if time.monotonic() > deadline:
                raise AssertionError(f"{service} committed only {done} after {within:.0f}s\n" + self.tails())
            await asyncio.sleep(0.02)

    async def wait_stored(self, n: int, *, within: float, stall_s: float = 60.0) -> None:
        """Until the database holds `n` mentions; fails when a process dies or nothing moves for `stall_s`."""
        deadline = time.monotonic() + within
        last, last_change = -1, time.monotonic()
        while True:
            self.procs.check_alive()
            count = await self.stored()
            now = time.monotonic()
            if count is not None and count >= n:
                return
            if count != last:
                last, last_change = count if count is not None else last, now
            if now - last_change > stall_s or now > deadline:
                raise AssertionError(
                    f"{count} of {n} mentions stored after {now - self.started:.0f}s "
                    f"(no progress for {now - last_change:.0f}s)\n" + self.tails()
                )
            await asyncio.sleep(0.1)

    async def wait_count_at_least(self, n: int, *, within: float) -> int:
        """Until at least `n` mentions are stored (a point mid-stream); the count then."""
        deadline = time.monotonic() + within
        while True:
            self.procs.check_alive()
            count = await self.stored()
            if count is not None and count >= n:
                return count
            if time.monotonic() > deadline:
                raise AssertionError(f"only {count} mentions stored after {within:.0f}s\n" + self.tails())
            await asyncio.sleep(0.02)

    def tails(self) -> str:
        return "\n".join(f"--- {n}\n{self.procs.tail(n, 15)}" for n in self.procs.procs)

    async def outcome(self, fault: str, expected: dict[str, frozenset[str]]) -> Outcome:
        """Count what reached the database and the department topics, against `expected`."""
        out = Outcome(fault=fault, sent=len(expected), seconds=round(time.monotonic() - self.started, 1))
        rows = await self.db.fetch("SELECT id, count(*) AS n FROM mentions GROUP BY id")
        stored = {r["id"]: int(r["n"]) for r in rows}
        out.stored = sum(1 for m in stored if m in expected)
        out.duplicated_rows = sum(n - 1 for n in stored.values())
        out.lost = len(expected.keys() - stored.keys())
        out.unexpected = len(stored.keys() - expected.keys())
        pairs = {(m, d) for m, ds in expected.items() for d in ds}
        rows = await self.db.fetch(
            "SELECT mention_id, department, count(*) AS n FROM assignments GROUP BY mention_id, department"
        )
        assigned = {(r["mention_id"], r["department"]): int(r["n"]) for r in rows}
        out.assignments_expected = len(pairs)
        out.assignments_stored = sum(1 for p in assigned if p in pairs)
        out.duplicated_assignments = sum(n - 1 for n in assigned.values())
        out.lost_assignments = len(pairs - assigned.keys())
        out.unexpected_assignments = len(assigned.keys() - pairs)
        topics = [self.settings.topic_routed(d) for d in DEPARTMENTS]
        routed = await read_topics(self.bootstrap, topics, timeout_s=60)
        seen = Counter((r.key.decode(), r.topic.rsplit(".", 1)[1]) for r in routed if r.key is not None)
        out.routed_events = len(routed)
        out.missing_on_topics = len(pairs - seen.keys())
        out.duplicates_on_topics = sum(n - 1 for p, n in seen.items() if p in pairs)
        out.dead_lettered = await end_offsets_total(self.bootstrap, self.settings.topic_dlq)
        REPORT.append(out)
        return out

    async def close(self, stop_within: float = 15.0) -> dict[str, int | None]:
        """Stop the services (their exit codes) and remove this test's topics: each run writes some
        25 MB to a broker that other tests share."""
        await self.db.close()
        codes = self.procs.stop(stop_within)
        await delete_topics(self.bootstrap, self.settings.topic_prefix)
        return codes


def write_report(path: Path, outcomes: Sequence[Outcome]) -> None:
    path.write_text(json.dumps([asdict(o) for o in outcomes], indent=1) + "\n")
