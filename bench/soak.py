"""`make soak DURATION=600`: the whole pipeline at a fixed rate for a long time.

The four services run as separate processes against the broker and database of `make test` (a topic
prefix and a database of the run's own, removed afterwards). Mentions arrive two ways: pushed to
`POST /v1/mentions` on an open-loop schedule (`--rate` a second, in batches of a tenth of a second, each
with an Idempotency-Key), and from `--feeds` local feeds that gain `--feed-rate` new entries a second
between them and are polled every 2 s. Every `--interval` seconds it samples each service's resident
memory, the consumer lag of the classifier and router groups, the services' error and dead-letter counters
(their /metrics), failed pushes and the dead-letter topic, and prints a line. At the end it lets the
pipeline drain, checks that every mention accepted was stored exactly once, and reports memory growth per
service (first sample after the warm-up to the last, and the least-squares slope over that span in MB per
hour). Results: bench/results/soak-<timestamp>.json; service logs under var/soak/<run>/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from bench import infra
from bench.pipeline import Database
from bench.soak_sources import Feeds, Pusher, register_feeds
from devsupport.feedserver import feed_server
from devsupport.private import PrivateKafka
from devsupport.processes import ServiceProcesses, free_port
from shared.db import migrate
from shared.settings import REPO_ROOT, BusKind, Settings

RESULTS = REPO_ROOT / "bench" / "results"
LOGS = REPO_ROOT / "var" / "soak"
SERVICES = ("api", "classifier", "router", "ingest")


class SoakFailure(Exception):
    """The pipeline lost or duplicated a mention, or a service died."""


@dataclass
class SoakConfig:
    duration_s: float
    rate: float
    interval_s: float
    feeds: int
    feed_rate: float
    warmup_s: float
    private_kafka: bool = False
    env: dict[str, str] = field(default_factory=dict)


def _say(message: str) -> None:
    sys.stderr.write(f"[soak {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


class KafkaProbe:
    """End offsets and consumer-group offsets, through clients kept open for the whole run (a broker
    holding thousands of topics answers a fresh client's first requests slowly)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        bootstrap = settings.kafka_bootstrap_servers
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
        )
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)

    async def __aenter__(self) -> KafkaProbe:
        await self._consumer.start()
        await self._admin.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._admin.close()
        await self._consumer.stop()

    def _partitions(self, topic: str) -> list[TopicPartition]:
        return [TopicPartition(topic, p) for p in range(self.settings.topic_partitions)]

    async def end(self, topic: str) -> int:
        offsets = await self._consumer.end_offsets(self._partitions(topic))
        return int(sum(offsets.values()))

    async def lag(self, group: str, topic: str) -> int:
        """Records of `topic` that `group` has not committed yet."""
        committed = await self._admin.list_consumer_group_offsets(group)
        done = sum(max(0, meta.offset) for tp, meta in committed.items() if tp.topic == topic)
        return await self.end(topic) - int(done)


async def _measured(
    what: str, errors: list[str], call: Awaitable[int], timeout_s: float = 10.0
) -> int | None:
    """`call`'s value, or None (the failure noted in `errors`) if it fails or takes over `timeout_s`."""
    try:
        return await asyncio.wait_for(call, timeout_s)
    except Exception as exc:  # noqa: BLE001 - a sample that fails is recorded as missing, the run goes on
        errors.append(f"{what}: {type(exc).__name__}")
        return None


async def _scrape(client: httpx.AsyncClient, url: str) -> dict[str, float] | None:
    """Errors and dead letters a service counted, from its /metrics (None if it does not answer)."""
    try:
        text = (await client.get(url, timeout=10)).text
    except httpx.HTTPError:
        return None
    out = {"errors": 0.0, "dead_letters": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "mr_errors_total":
                out["errors"] += sample.value
            elif sample.name == "mr_dead_letters_total":
                out["dead_letters"] += sample.value
    return out


def _slope_mb_per_hour(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MB) points, in MB per hour."""
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_m = sum(m for _, m in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return None
    cov = sum((t - mean_t) * (m - mean_m) for t, m in points)
    return round(cov / var * 3600, 2)


def _postgres_server() -> str:
    url = os.environ.get("MR_DATABASE_URL", "")
    return url if url.startswith("postgresql") else infra.script_env("postgres.sh")["MR_DATABASE_URL"]


async def run_soak(cfg: SoakConfig) -> dict[str, Any]:
    private: PrivateKafka | None = None
    if cfg.private_kafka:
        private = PrivateKafka()
        _say(f"starting a broker of this run's own on 127.0.0.1:{private.port}")
        await asyncio.to_thread(private.start)
        bootstrap, server_url = private.bootstrap, _postgres_server()
    else:
        bootstrap, server_url = infra.backing_services()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_id = f"soak{stamp.lower()}"
    prefix = f"{run_id}."
    database = f"mr_{run_id}"
    logs = LOGS / run_id
    logs.mkdir(parents=True, exist_ok=True)
    settings = Settings().model_copy(
        update={"bus": BusKind.KAFKA, "kafka_bootstrap_servers": bootstrap, "topic_prefix": prefix}
    )
    db_url = await infra.create_database(server_url, database)
    settings = settings.model_copy(update={"database_url": db_url})
    api_port = free_port()
    key = f"mr_{secrets.token_hex(4)}_{secrets.token_urlsafe(24)}"
    # Every service, the API too, serves /metrics on a metrics port of its own (never on the API's port).
    metrics_ports = {name: free_port() for name in SERVICES}
    env = {
        **os.environ,
        "MR_BUS": "kafka",
        "MR_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "MR_TOPIC_PREFIX": prefix,
        "MR_DATABASE_URL": db_url,
        "MR_API_PORT": str(api_port),
        "MR_API_BOOTSTRAP_KEY": key,
        "MR_INGEST_ALLOWED_NETWORKS": "127.0.0.1",
        "MR_INGEST_SOURCES_REFRESH_S": "1",
        "PYTHONUNBUFFERED": "1",
        **cfg.env,
    }
    services = ServiceProcesses(env, logs, failure=SoakFailure)
    samples: list[dict[str, Any]] = []
    result: dict[str, Any] = {}
    try:
        await migrate(db_url)
        await infra.create_topics(bootstrap, settings.all_topics(), partitions=settings.topic_partitions)
        await _wait_topics_ready(settings)
        with feed_server() as server:
            feeds = Feeds(server, cfg.feeds, run_id)
            await register_feeds(settings, feeds)
            for name in SERVICES:
                services.start(name, MR_METRICS_PORT=str(metrics_ports[name]))
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{api_port}",
                timeout=30,
                headers={"Authorization": f"Bearer {key}"},
            ) as api:
                await _wait_ready(api, services)
                result = await _soak(cfg, settings, services, api, feeds, metrics_ports, samples)
                result["logs"] = str(logs)
    finally:
        codes = services.stop(timeout=20.0)
        await infra.drop_database(server_url, database)
        if private is not None:
            await asyncio.to_thread(private.remove)
        else:
            await infra.delete_topics(bootstrap, prefix)
    result["exit_codes"] = codes
    bad = {n: c for n, c in codes.items() if c != 0}
    if bad:
        raise SoakFailure(f"services did not stop cleanly on SIGTERM: {bad}")
    return result


async def _wait_topics_ready(settings: Settings, within: float = 180.0) -> None:
    """Until a new client sees every topic with a leader for each partition: a broker holding thousands of
    topics can take a while, and a service starting before that fails on an unknown topic."""
    deadline = time.monotonic() + within
    topics = settings.all_topics()
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
        await admin.start()
        try:
            described: list[Any] = await admin.describe_topics(topics)
        finally:
            await admin.close()
        ready = len(described) == len(topics) and all(
            t["error_code"] == 0 and t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"])
            for t in described
        )
        if ready:
            return
        if time.monotonic() > deadline:
            raise SoakFailure(f"the topics were not in the broker's metadata after {within:.0f} s")
        _say("waiting for the broker to publish the new topics' metadata")
        await asyncio.sleep(2.0)


async def _wait_ready(api: httpx.AsyncClient, services: ServiceProcesses) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        services.check_alive()
        with contextlib.suppress(httpx.HTTPError):
            if (await api.get("/readyz")).status_code == 200:
                return
        await asyncio.sleep(0.5)
    raise SoakFailure("the API was not ready within 90 s")


async def _soak(
    cfg: SoakConfig,
    settings: Settings,
    services: ServiceProcesses,
    api: httpx.AsyncClient,
    feeds: Feeds,
    metrics_ports: dict[str, int],
    samples: list[dict[str, Any]],
) -> dict[str, Any]:
    pids = services.pids()
    pusher = Pusher(api, rate=cfg.rate, run_id=feeds.run_id)
    start = time.monotonic()
    until = start + cfg.duration_s

    async with Database(settings.database_url) as db, KafkaProbe(settings) as probe:
        sampler = _Sampler(
            settings, services, api, feeds, pusher, pids, metrics_ports, db, probe, start, samples
        )
        _say(
            f"{cfg.duration_s:.0f} s at {cfg.rate:.0f} pushed + {cfg.feed_rate:.0f} feed mentions/s; "
            f"a sample every {cfg.interval_s:.0f} s"
        )
        await sampler.sample()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(pusher.run(until))
            tasks.create_task(_grow_feeds(feeds, until, cfg.feed_rate))
            tasks.create_task(sampler.run(until, cfg.interval_s))

        # Drain: every accepted push and every entry the feeds show, stored.
        expected = pusher.accepted | feeds.mention_ids()
        drain_started = time.monotonic()
        stored: set[str] = set()
        while time.monotonic() - drain_started < 120:
            services.check_alive()
            stored = {r["id"] for r in await db.fetch("SELECT id FROM mentions")}
            if expected <= stored:
                break
            await asyncio.sleep(1.0)
        drain_s = round(time.monotonic() - drain_started, 1)
        final = await sampler.sample()
        duplicated = await db.fetch(
            "SELECT (SELECT count(*) FROM mentions) - (SELECT count(DISTINCT id) FROM mentions) AS m, "
            "(SELECT count(*) FROM assignments) - "
            "(SELECT count(*) FROM (SELECT DISTINCT mention_id, department FROM assignments) d) AS a"
        )
    lost = len(expected - stored)
    out = {
        "config": {
            "duration_s": cfg.duration_s,
            "rate_per_s": cfg.rate,
            "feeds": cfg.feeds,
            "feed_rate_per_s": cfg.feed_rate,
            "interval_s": cfg.interval_s,
            "warmup_s": cfg.warmup_s,
            "private_kafka": cfg.private_kafka,
            "env": cfg.env,
        },
        "pushed": pusher.sent,
        "accepted": len(pusher.accepted),
        "push_failures": pusher.failures,
        "pusher_max_behind_s": round(pusher.max_behind_s, 3),
        "feed_entries": feeds.added,
        "expected": len(expected),
        "stored": len(stored & expected),
        "lost": lost,
        "duplicated_rows": int(duplicated[0]["m"]) + int(duplicated[0]["a"]),
        "drain_s": drain_s,
        "memory": _memory(samples, pids, warmup_s=cfg.warmup_s),
        **_sample_figures(samples, final),
        "samples": samples,
    }
    out["ok"] = lost == 0 and out["duplicated_rows"] == 0 and not pusher.failures and final["dlq"] == 0
    return out


async def _grow_feeds(feeds: Feeds, until: float, rate: float) -> None:
    """`rate` new feed entries a second (a fraction carried over to the next second) until `until`."""
    owed = 0.0
    while time.monotonic() < until:
        owed += rate
        feeds.grow(int(owed))
        owed -= int(owed)
        await asyncio.sleep(1.0)


@dataclass
class _Sampler:
    """One sample row every interval: what was sent, each service's memory, what was stored, the consumer
    lag, the services' error and dead-letter counters and the dead-letter topic; printed as it is taken."""

    settings: Settings
    services: ServiceProcesses
    api: httpx.AsyncClient
    feeds: Feeds
    pusher: Pusher
    pids: dict[str, int]
    metrics_ports: dict[str, int]
    db: Database
    probe: KafkaProbe
    start: float
    samples: list[dict[str, Any]]

    async def run(self, until: float, interval_s: float) -> None:
        while time.monotonic() < until:
            await asyncio.sleep(min(interval_s, max(0.0, until - time.monotonic())))
            await self.sample()

    async def sample(self) -> dict[str, Any]:
        settings, probe = self.settings, self.probe
        self.services.check_alive()
        row: dict[str, Any] = {"t_s": round(time.monotonic() - self.start, 1)}
        # The counters first, in one go: the requests below take a while on a busy machine.
        row["pushed"] = self.pusher.sent
        row["push_failures"] = sum(self.pusher.failures.values())
        row["feed_entries"] = self.feeds.added
        row["rss_mb"] = {name: round(infra.memory_mb(pid)[0], 1) for name, pid in self.pids.items()}
        row["stored"] = await self.db.mentions()
        errors: list[str] = []
        row["lag"] = {
            "classifier": await _measured(
                "lag", errors, probe.lag(settings.group("classifier"), settings.topic_raw)
            ),
            "router": await _measured(
                "lag", errors, probe.lag(settings.group("router"), settings.topic_classified)
            ),
        }
        counters = {
            name: await _scrape(self.api, f"http://127.0.0.1:{port}/metrics")
            for name, port in self.metrics_ports.items()
        }
        row["errors"] = {n: None if c is None else int(c["errors"]) for n, c in counters.items()}
        row["dead_letters"] = {n: None if c is None else int(c["dead_letters"]) for n, c in counters.items()}
        row["dlq"] = await _measured("dlq", errors, probe.end(settings.topic_dlq))
        row["sample_errors"] = errors
        self.samples.append(row)
        _print_row(row, header=len(self.samples) == 1)
        return row


def _memory(samples: list[dict[str, Any]], pids: dict[str, int], *, warmup_s: float) -> dict[str, Any]:
    """Each service's memory from the first sample after the warm-up to the last: growth, slope, peak."""
    warm = [s for s in samples if s["t_s"] >= warmup_s] or samples
    memory = {}
    for name in pids:
        points = [(s["t_s"], s["rss_mb"][name]) for s in warm]
        memory[name] = {
            "after_warmup_mb": points[0][1],
            "final_mb": points[-1][1],
            "growth_mb": round(points[-1][1] - points[0][1], 1),
            "slope_mb_per_hour": _slope_mb_per_hour(points),
            "peak_mb": round(infra.memory_mb(pids[name])[1], 1),
        }
    return memory


def _sample_figures(samples: list[dict[str, Any]], final: dict[str, Any]) -> dict[str, Any]:
    """The lag at its highest, and the last sample's lag, counters and dead-letter topic."""
    return {
        "lag_max": {
            g: max((s["lag"][g] for s in samples if s["lag"][g] is not None), default=None)
            for g in ("classifier", "router")
        },
        "samples_with_errors": sum(1 for s in samples if s["sample_errors"]),
        "lag_final": final["lag"],
        "errors_final": final["errors"],
        "dead_letters_final": final["dead_letters"],
        "dlq_final": final["dlq"],
    }


def _n(value: int | None) -> str:
    return "-" if value is None else str(value)


def _print_row(row: dict[str, Any], *, header: bool) -> None:
    names = list(row["rss_mb"])
    if header:
        print(  # noqa: T201
            f"{'t (s)':>7} {'pushed':>8} {'feed':>6} {'stored':>8} {'lag cls':>7} {'lag rtr':>7} "
            + " ".join(f"{'rss ' + n[:4]:>9}" for n in names)
            + f" {'errors':>7} {'dlq':>5} {'push err':>8}"
        )
    print(  # noqa: T201
        f"{row['t_s']:>7.0f} {row['pushed']:>8} {row['feed_entries']:>6} {row['stored']:>8} "
        f"{_n(row['lag']['classifier']):>7} {_n(row['lag']['router']):>7} "
        + " ".join(f"{row['rss_mb'][n]:>9.1f}" for n in names)
        + f" {sum(v for v in row['errors'].values() if v):>7} {_n(row['dlq']):>5} {row['push_failures']:>8}",
        flush=True,
    )


def _summary(result: dict[str, Any]) -> str:
    lines = [
        f"pushed {result['pushed']} ({result['accepted']} accepted, failures "
        f"{result['push_failures'] or 0}), feed entries {result['feed_entries']}; stored {result['stored']} "
        f"of {result['expected']}, lost {result['lost']}, duplicated rows {result['duplicated_rows']}; "
        f"drained in {result['drain_s']} s",
        f"consumer lag max: {result['lag_max']}; at the end: {result['lag_final']}",
        f"errors (mr_errors_total) at the end: {result['errors_final']}; dead letters: {result['dlq_final']}",
        f"{'service':<11} {'after warm-up':>13} {'final':>8} {'growth':>8} {'MB/hour':>8} {'peak':>8}",
    ]
    for name, m in result["memory"].items():
        slope = "-" if m["slope_mb_per_hour"] is None else f"{m['slope_mb_per_hour']:.1f}"
        lines.append(
            f"{name:<11} {m['after_warmup_mb']:>13.1f} {m['final_mb']:>8.1f} {m['growth_mb']:>8.1f} "
            f"{slope:>8} {m['peak_mb']:>8.1f}"
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    p.add_argument("--rate", type=float, default=200.0, help="mentions pushed to the API a second (200)")
    p.add_argument("--feeds", type=int, default=10, help="local feeds ingest polls every 2 s (10)")
    p.add_argument("--feed-rate", type=float, default=10.0, help="new feed entries a second, all feeds (10)")
    p.add_argument("--interval", type=float, default=15.0, help="seconds between samples (15)")
    p.add_argument(
        "--warmup", type=float, help="seconds before memory growth is measured (duration/10, >=30)"
    )
    p.add_argument(
        "--private-kafka",
        action="store_true",
        help="start a broker of the run's own (deploy/local/kafka.sh on free ports), removed afterwards",
    )
    p.add_argument("--set", action="append", default=[], metavar="MR_NAME=VALUE", help="a service setting")
    p.add_argument("--out", type=Path, help="results file (default bench/results/soak-<timestamp>.json)")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    env = dict(item.split("=", 1) for item in args.set)
    cfg = SoakConfig(
        duration_s=args.duration,
        rate=args.rate,
        interval_s=args.interval,
        feeds=args.feeds,
        feed_rate=args.feed_rate,
        warmup_s=args.warmup if args.warmup is not None else max(30.0, args.duration / 10),
        private_kafka=args.private_kafka,
        env=env,
    )
    started = datetime.now(UTC)
    machine = infra.machine()
    result = asyncio.run(run_soak(cfg))
    result["started_at"] = started.isoformat()
    result["machine"] = machine
    out = args.out or RESULTS / f"soak-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(_summary(result))  # noqa: T201
    print(f"results: {out}")  # noqa: T201
    if not result["ok"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
