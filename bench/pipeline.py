"""The pipeline as it is deployed: classifier and router as separate processes on Kafka and PostgreSQL.

Phases, on a fresh topic prefix and a fresh database:
1. warm-up: a few hundred mentions through, and every consumer group stable, before any clock starts;
2. throughput: N mentions published as fast as the producer goes, timed from the first publish to the
   moment the database holds the last one (the router writes a mention and its assignments in one
   transaction, so the mention count reaching N means every assignment is stored too);
3. latency: an open-loop schedule at a fixed offered load. Mention i is due at t0 + i/rate and is sent
   when due whatever happened before, and its latency is the arrival of its routed event on the
   department topic minus that *scheduled* time, so a stall delays every later mention's figure
   instead of hiding them (no coordinated omission);
4. checks: every mention stored exactly once with at least one assignment, every assignment's routed
   event seen on its department's topic during the latency phase, nothing dead-lettered, every process
   stopping with exit code 0 on SIGTERM.
Peak RSS comes from /proc/<pid>/status (VmHWM) and CPU seconds from /proc/<pid>/stat.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy.engine import make_url

from bench import infra
from bench.generate import Generated
from bench.relay import producer, send_all
from devsupport.processes import ServiceProcesses, free_port
from shared.db import migrate
from shared.kafkaauth import client_options
from shared.settings import DEPARTMENTS, Settings


class BenchFailure(Exception):
    """The pipeline did not do its job under load (a lost or duplicated mention, a crashed process)."""


@dataclass
class PipelineConfig:
    count: int
    warmup: int
    latency_rate: float
    latency_seconds: float
    classifiers: int = 1
    routers: int = 1
    # Extra MR_* variables for the service processes (the knobs being measured), and per stage
    # (`classifier`, `router`: e.g. each its own Kafka user).
    env: dict[str, str] = field(default_factory=dict)
    stage_env: dict[str, dict[str, str]] = field(default_factory=dict)
    stall_timeout_s: float = 90.0
    # Also read `mentions.classified` during the latency phase to split the latency into hops. Off for
    # the reported figures: the extra consumer costs the load generator ~100 µs of CPU per mention.
    hops: bool = False
    # The open-loop generator's linger: a source that sends each mention on its own costs the shared
    # broker one request per mention. Whatever it adds is charged to the measured latency (it counts
    # from the scheduled time).
    generator_linger_ms: int = 5


class Database:
    """Direct asyncpg reads of the run's database: counting must not cost the router anything."""

    def __init__(self, url: str) -> None:
        self._url = make_url(url)
        self._conn: Any = None

    async def __aenter__(self) -> Database:
        import asyncpg  # type: ignore[import-untyped]

        u = self._url
        self._conn = await asyncpg.connect(
            host=u.host, port=u.port, user=u.username, password=u.password, database=u.database
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._conn.close()

    async def mentions(self) -> int:
        return int(await self._conn.fetchval("SELECT count(*) FROM mentions"))

    async def assignments(self) -> int:
        return int(await self._conn.fetchval("SELECT count(*) FROM assignments"))

    async def fetch(self, query: str, *args: object) -> list[Any]:
        return list(await self._conn.fetch(query, *args))

    async def backend_pids(self, database: str) -> list[int]:
        rows = await self._conn.fetch(
            # The services' backends on this run's database (not this counting connection): the
            # checkpointer and WAL writer serve every database on the server, other people's too.
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )
        return [int(r["pid"]) for r in rows]


class RssSampler:
    """Samples VmRSS of the service processes; VmHWM at the end gives the kernel's own peak."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.peak: dict[str, float] = dict.fromkeys(pids, 0.0)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    def sample(self) -> None:
        for name, pid in self.pids.items():
            rss, _ = infra.memory_mb(pid)
            self.peak[name] = max(self.peak[name], rss)

    def result(self) -> dict[str, dict[str, float]]:
        self.sample()
        return {
            name: {"peak_mb": round(max(infra.memory_mb(pid)[1], self.peak[name]), 1)}
            for name, pid in self.pids.items()
        }


async def _wait_stored(
    db: Database, services: ServiceProcesses, target: int, *, stall_timeout_s: float, poll_s: float = 0.1
) -> float:
    """Poll the mention count until it reaches `target`; the time it did. Fails on a stall."""
    last, last_change = -1, time.perf_counter()
    while True:
        services.check_alive()
        n = await db.mentions()
        now = time.perf_counter()
        if n >= target:
            if n > target:
                raise BenchFailure(f"the database holds {n} mentions, {n - target} more than were published")
            return now
        if n != last:
            last, last_change = n, now
        elif now - last_change > stall_timeout_s:
            raise BenchFailure(f"no progress for {stall_timeout_s:.0f}s at {n} of {target} stored mentions")
        await asyncio.sleep(poll_s)


async def _wait_groups(settings: Settings, expected: dict[str, int], *, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while True:
        security = client_options(settings)
        states = {
            g: await infra.group_members(settings.kafka_bootstrap_servers, g, **security) for g in expected
        }
        if all(state == "Stable" and members == expected[g] for g, (state, members) in states.items()):
            return
        if time.monotonic() > deadline:
            raise BenchFailure(f"consumer groups not stable after {within:.0f}s: {states}")
        await asyncio.sleep(0.5)


def _percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least q% of the values at or below it."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


class _Arrivals:
    """The latency phase's routed events as they arrive: each (mention, department)'s latency from the
    mention's scheduled time and, with hops, where the time went."""

    def __init__(self, classified_topic: str) -> None:
        self.classified_topic = classified_topic
        self.scheduled: dict[str, float] = {}
        self.seen: dict[tuple[str, str], float] = {}
        # Where the time goes: the producers' CreateTime stamps (wall clock, ms) of each hop.
        self.classified_ms: dict[str, int] = {}
        self.hop_times: list[tuple[float, float, float]] = []
        self.wall = time.time() - time.perf_counter()
        self.duplicates = 0

    async def receive(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        scheduled, seen, classified_ms, wall = self.scheduled, self.seen, self.classified_ms, self.wall
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100)
            arrival = time.perf_counter()
            for records in batches.values():
                for r in records:
                    key = r.key.decode() if r.key else ""
                    if key not in scheduled:
                        continue
                    if r.topic == self.classified_topic:
                        classified_ms.setdefault(key, r.timestamp)
                        continue
                    pair = (key, r.topic.rsplit(".", 1)[1])
                    if pair in seen:
                        self.duplicates += 1
                        continue
                    seen[pair] = arrival - scheduled[key]
                    if key in classified_ms:
                        due_ms = (scheduled[key] + wall) * 1000
                        self.hop_times.append(
                            (
                                classified_ms[key] - due_ms,
                                r.timestamp - classified_ms[key],
                                (arrival + wall) * 1000 - r.timestamp,
                            )
                        )

    def check(self, expected: set[tuple[str, str]]) -> None:
        """Every expected routed event arrived, and no other."""
        missing = expected - self.seen.keys()
        if missing:
            raise BenchFailure(f"{len(missing)} routed events never arrived on their department topics")
        stray = self.seen.keys() - expected
        if stray:
            raise BenchFailure(
                f"{len(stray)} routed events arrived for assignments the database does not hold"
            )

    def figures(self, *, rate: float, mentions: int, send_schedule_s: float, behind: float) -> dict[str, Any]:
        latencies = [v * 1000 for v in self.seen.values()]
        first: dict[str, float] = {}
        for (key, _), v in self.seen.items():
            first[key] = min(first.get(key, v), v)
        hop_times = self.hop_times
        return {
            "offered_per_s": rate,
            "mentions": mentions,
            "routed_events": len(latencies),
            "duplicate_routed_events": self.duplicates,
            "send_schedule_s": send_schedule_s,
            "sender_max_behind_ms": round(behind * 1000, 1),
            "latency_ms": {
                "p50": round(_percentile(latencies, 50), 1),
                "p90": round(_percentile(latencies, 90), 1),
                "p99": round(_percentile(latencies, 99), 1),
                "max": round(max(latencies), 1),
                "mean": round(sum(latencies) / len(latencies), 1),
            },
            # Medians of each hop (--hops), from the producers' CreateTime stamps (one machine's clock):
            # due → classifier's send, classifier's send → router's send, router's send → arrival here.
            "hops_p50_ms": {
                name: round(_percentile([h[i] for h in hop_times], 50), 1)
                for i, name in enumerate(("to_classified", "classified_to_routed", "routed_to_arrival"))
            }
            if hop_times
            else None,
            "first_department_latency_ms": {
                "p50": round(_percentile([v * 1000 for v in first.values()], 50), 1),
                "p99": round(_percentile([v * 1000 for v in first.values()], 99), 1),
            },
        }


async def _assign_at_end(consumer: AIOKafkaConsumer, settings: Settings, *, hops: bool) -> None:
    """Read the department topics (and, with hops, the classified topic) from their current ends."""
    routed_topics = [settings.topic_routed(d) for d in DEPARTMENTS]
    tps = [
        TopicPartition(t, p)
        for t in ([settings.topic_classified] if hops else []) + routed_topics
        for p in range(settings.topic_partitions)
    ]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:  # resolve the positions now, not after the first routed event arrived
        await consumer.position(tp)


async def _send_on_schedule(
    prod: Any, messages: Sequence[Generated], rate: float, scheduled: dict[str, float]
) -> tuple[float, float]:
    """Send mention i at t0 + i/rate whatever happened before (open loop), noting each one's scheduled
    time in `scheduled`; t0 and how far the sender fell behind its schedule at worst."""
    futures = []
    t0 = time.perf_counter() + 0.05
    behind = 0.0
    for i, g in enumerate(messages):
        due = t0 + i / rate
        scheduled[g.key] = due
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            behind = max(behind, -delay)
        m = g.message
        futures.append(
            await prod.send(
                m.topic,
                value=m.value,
                key=m.key.encode(),
                headers=[(k, v.encode()) for k, v in m.headers.items()],
            )
        )
    await asyncio.gather(*futures)
    return t0, behind


async def _latency_phase(
    settings: Settings,
    db: Database,
    services: ServiceProcesses,
    messages: Sequence[Generated],
    *,
    rate: float,
    hops: bool,
    generator_linger_ms: int,
    stored_before: int,
    stall_timeout_s: float,
) -> dict[str, Any]:
    """`messages` on an open-loop schedule at `rate`; each routed event's latency from its mention's
    scheduled time, once every mention is stored and every routed event the database expects arrived."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id="mention-router.bench.latency",
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=20,
        max_poll_records=5_000,
        **client_options(settings),
    )
    await consumer.start()
    prod = producer(settings, linger_ms=generator_linger_ms)
    await prod.start()
    arrivals = _Arrivals(settings.topic_classified)
    stop = asyncio.Event()
    try:
        await _assign_at_end(consumer, settings, hops=hops)
        receiver = asyncio.create_task(arrivals.receive(consumer, stop))
        t0, behind = await _send_on_schedule(prod, messages, rate, arrivals.scheduled)
        sent_at = time.perf_counter()
        await _wait_stored(db, services, stored_before + len(messages), stall_timeout_s=stall_timeout_s)
        rows = await db.fetch(
            "SELECT mention_id, department FROM assignments WHERE mention_id = ANY($1::text[])",
            [g.key for g in messages],
        )
        expected = {(r["mention_id"], r["department"]) for r in rows}
        deadline = time.monotonic() + 30
        while not expected <= arrivals.seen.keys() and time.monotonic() < deadline:
            services.check_alive()
            await asyncio.sleep(0.05)
        stop.set()
        await receiver
    finally:
        stop.set()
        await prod.stop()
        await consumer.stop()
    arrivals.check(expected)
    return arrivals.figures(
        rate=rate, mentions=len(messages), send_schedule_s=round(sent_at - t0, 2), behind=behind
    )


async def _check_exactly_once(db: Database, settings: Settings, keys: set[str]) -> dict[str, Any]:
    stored = {r["id"] for r in await db.fetch("SELECT id FROM mentions")}
    unassigned = await db.fetch(
        "SELECT count(*) AS n FROM mentions m WHERE NOT EXISTS "
        "(SELECT 1 FROM assignments a WHERE a.mention_id = m.id)"
    )
    dlq = await _end_offsets(settings, settings.topic_dlq)
    result = {
        "published": len(keys),
        "stored": len(stored),
        "missing": len(keys - stored),
        "unexpected": len(stored - keys),
        "without_assignment": int(unassigned[0]["n"]),
        "dead_lettered": dlq,
    }
    result["ok"] = (
        result["missing"] == 0
        and result["unexpected"] == 0
        and result["without_assignment"] == 0
        and result["dead_lettered"] == 0
    )
    return result


async def _end_offsets(settings: Settings, topic: str) -> int:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None, **client_options(settings)
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()


async def run_pipeline(
    cfg: PipelineConfig,
    *,
    settings: Settings,
    server_url: str,
    messages: Sequence[Generated],
    logs: Path,
    progress: Any = None,
) -> dict[str, Any]:
    """The whole pipeline phase; `messages` holds warm-up + throughput + latency mentions, in order."""
    say = progress or (lambda _msg: None)
    warm = messages[: cfg.warmup]
    load = messages[cfg.warmup : cfg.warmup + cfg.count]
    timed = messages[cfg.warmup + cfg.count :]
    database = f"mr_bench_{settings.topic_prefix.strip('.').replace('-', '_')}"
    db_url = await infra.create_database(server_url, database)
    try:
        await migrate(db_url)
        await infra.create_topics(
            settings.kafka_bootstrap_servers,
            settings.all_topics(),
            partitions=settings.topic_partitions,
            **client_options(settings),
        )
        env = infra.service_env(settings, MR_DATABASE_URL=db_url, **cfg.env)
        services = ServiceProcesses(env, logs, failure=BenchFailure)
        for i in range(cfg.classifiers):
            services.start(
                "classifier",
                f"classifier-{i + 1}",
                MR_METRICS_PORT=str(free_port()),
                **cfg.stage_env.get("classifier", {}),
            )
        for i in range(cfg.routers):
            services.start(
                "router",
                f"router-{i + 1}",
                MR_METRICS_PORT=str(free_port()),
                **cfg.stage_env.get("router", {}),
            )
        codes: dict[str, int | None] = {}
        try:
            async with Database(db_url) as db:
                result = await _run_phases(cfg, settings, db, database, services, warm, load, timed, say)
        finally:
            codes = services.stop(timeout=20.0)
        bad = {name: code for name, code in codes.items() if code != 0}
        if bad:
            raise BenchFailure(
                f"processes did not stop cleanly on SIGTERM: {bad}\n"
                + "\n".join(f"--- {n}\n{services.tail(n)}" for n in bad)
            )
        result["exit_codes"] = codes
        return result
    finally:
        await infra.drop_database(server_url, database)


async def _run_phases(
    cfg: PipelineConfig,
    settings: Settings,
    db: Database,
    database: str,
    services: ServiceProcesses,
    warm: Sequence[Generated],
    load: Sequence[Generated],
    timed: Sequence[Generated],
    say: Any,
) -> dict[str, Any]:
    prod = producer(settings)
    await prod.start()
    try:
        say(f"warm-up: {len(warm)} mentions, waiting for the consumer groups")
        await send_all(prod, [g.message for g in warm])
        await _wait_stored(db, services, len(warm), stall_timeout_s=cfg.stall_timeout_s)
        await _wait_groups(
            settings, {settings.group("classifier"): cfg.classifiers, settings.group("router"): cfg.routers}
        )
        pids = services.pids()
        meter = await _cpu_meter(db, database, pids)
        sampler = RssSampler(pids)
        sampling = asyncio.Event()
        sampler_task = asyncio.create_task(sampler.run(sampling))

        say(f"throughput: {len(load)} mentions")
        meter.start()
        started = time.perf_counter()
        await send_all(prod, [g.message for g in load])
        published = time.perf_counter()
        finished = await _wait_stored(
            db, services, len(warm) + len(load), stall_timeout_s=cfg.stall_timeout_s
        )
        cpu = await _stop_meter(meter, db, database)
    finally:
        await prod.stop()
    elapsed = finished - started
    stored = len(warm) + len(load)

    say(f"latency: {len(timed)} mentions at {cfg.latency_rate:.0f}/s")
    meter.start()
    latency = await _latency_phase(
        settings,
        db,
        services,
        timed,
        rate=cfg.latency_rate,
        hops=cfg.hops,
        generator_linger_ms=cfg.generator_linger_ms,
        stored_before=stored,
        stall_timeout_s=cfg.stall_timeout_s,
    )
    latency_cpu = await _stop_meter(meter, db, database)
    sampling.set()
    await sampler_task
    rss = sampler.result()
    checks = await _check_exactly_once(db, settings, {g.key for g in (*warm, *load, *timed)})
    if not checks["ok"]:
        raise BenchFailure(f"the pipeline lost, duplicated or dead-lettered mentions: {checks}")
    return {
        **_throughput_figures(cfg, cpu, mentions=len(load), elapsed=elapsed, publish_s=published - started),
        "latency": latency,
        "latency_cpu": latency_cpu,
        "rss": rss,
        "checks": checks,
    }


async def _cpu_meter(db: Database, database: str, pids: dict[str, int]) -> infra.CpuMeter:
    """CPU of each service process, of the broker, of the run database's backends, and of this process."""
    backing = infra.backing_pids()
    groups = {name: [pid] for name, pid in pids.items()}
    groups["kafka"] = backing["kafka"]
    groups["postgres"] = await db.backend_pids(database)
    groups["bench"] = [os.getpid()]
    return infra.CpuMeter(groups)


class _Backends(Protocol):
    async def backend_pids(self, database: str) -> list[int]: ...


async def _stop_meter(meter: infra.CpuMeter, db: _Backends, database: str) -> dict[str, Any]:
    """`meter.stop()` with PostgreSQL's backends opened since the meter started counted too.

    The router's pool opens a second connection when a batch is written while the outbox relay holds the
    first, and then takes its connections in turn: a meter that knew only the backends of the start
    missed about half of PostgreSQL's work (as bench.router_bench did). A backend opened during the phase
    did all its work in it. The next phase counts it from its own start, like the others. (A backend
    opened and closed within a phase is still missed: the services' pools keep theirs open.)
    """
    cpu = meter.stop()
    known = set(meter.groups["postgres"])
    opened = [pid for pid in await db.backend_pids(database) if pid not in known]
    late = sum(infra.cpu_seconds(pid) for pid in opened)
    cpu["cpu_s"]["postgres"] = round(cpu["cpu_s"]["postgres"] + late, 2)
    cpu["other_cpu_s"] = round(max(0.0, cpu["other_cpu_s"] - late), 2)
    meter.groups["postgres"].extend(opened)
    return cpu


def _throughput_figures(
    cfg: PipelineConfig, cpu: dict[str, Any], *, mentions: int, elapsed: float, publish_s: float
) -> dict[str, Any]:
    """The throughput phase's figures: the rate, the CPU per mention, and the stage that limits."""
    classifier_cpu = sum(v for k, v in cpu["cpu_s"].items() if k.startswith("classifier"))
    # What the pipeline costs per mention, whoever else shares the machine: its processes, the broker
    # and the database (the load generator left out). Cores divided by it is the ceiling of this code
    # on this machine when nothing else runs, a figure that stays comparable on a noisy machine.
    pipeline_cpu = sum(v for k, v in cpu["cpu_s"].items() if k != "bench")
    cores = os.cpu_count() or 1
    # The stage that limits: the busiest share of its own processes' capacity (a classifier or router
    # process runs its Python on one core at a time).
    busy = {
        stage: sum(v for k, v in cpu["cpu_s"].items() if k.startswith(stage))
        / (elapsed * (cfg.classifiers if stage == "classifier" else cfg.routers))
        for stage in ("classifier", "router")
    }
    return {
        "limiting_stage": max(busy, key=busy.__getitem__),
        "stage_busy_share": {k: round(v, 3) for k, v in busy.items()},
        "classifiers": cfg.classifiers,
        "routers": cfg.routers,
        "service_env": cfg.env,
        "mentions": mentions,
        "seconds": round(elapsed, 3),
        "publish_seconds": round(publish_s, 3),
        "throughput_per_s": round(mentions / elapsed, 1),
        "cpu": cpu,
        "cpu_us_per_mention": {k: round(v / mentions * 1e6) for k, v in cpu["cpu_s"].items()},
        "pipeline_cpu_us_per_mention": round(pipeline_cpu / mentions * 1e6),
        "cpu_bound_capacity_per_s": round(cores * mentions / pipeline_cpu) if pipeline_cpu else None,
        "classifier_cpu_share": round(classifier_cpu / pipeline_cpu, 3) if pipeline_cpu else None,
        "other_load_share": round(cpu["other_cpu_s"] / cpu["machine_capacity_cpu_s"], 3)
        if cpu["machine_capacity_cpu_s"]
        else None,
    }
