"""The router alone, as deployed: router processes consuming `mentions.classified` from real Kafka and
storing into real PostgreSQL, against the bare relay measured in the same run.

The classified events are made in this process before any clock starts (the rule engine over generated
300-1,500 character mentions, encoded as the classifier publishes them). After a warm-up that leaves the
consumer group stable, N events are published as fast as the producer goes and the clock runs from the
first publish to the moment the database holds the last mention (a mention and its assignments are written
in one transaction). Peak RSS and CPU seconds per process come from /proc.

    python -m bench.router_bench [--count 50000] [--routers 1] [--no-relay]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import alone, infra
from bench.alone import WARMUP
from bench.generate import generate
from bench.pipeline import BenchFailure, Database, RssSampler, _stop_meter, _wait_groups, _wait_stored
from bench.relay import producer, send_all
from devsupport.processes import ServiceProcesses, free_port
from shared.bus.base import OutMessage
from shared.bus.codec import encode
from shared.classify import RuleEngine, Taxonomy
from shared.db import migrate
from shared.events import MentionClassified, MentionIngested
from shared.settings import Settings


def classified(n: int, *, run_id: str, settings: Settings) -> list[OutMessage]:
    """`n` MentionClassified messages for the run's `mentions.classified`, as the classifier makes them."""
    engine = RuleEngine(Taxonomy.from_file(settings.taxonomy_file))
    out: list[OutMessage] = []
    for g in generate(n, run_id=run_id, topic=settings.topic_raw):
        event = MentionIngested.model_validate_json(g.message.value)
        labelled = MentionClassified(
            mention=event.mention,
            ingested_at=event.ingested_at,
            classification=engine.classify(event.mention),
        )
        out.append(
            encode(
                topic=settings.topic_classified,
                key=event.mention.id,
                event=labelled,
                source="/bench/classifier",
            )
        )
    return out


async def run_router(
    *,
    settings: Settings,
    server_url: str,
    messages: Sequence[OutMessage],
    warmup: int,
    routers: int,
    logs: Path,
    env: dict[str, str] | None = None,
    stall_timeout_s: float = 90.0,
    say: Any = None,
) -> dict[str, Any]:
    """Warm-up, then the timed batch; `messages` holds both, warm-up first."""
    say = say or (lambda _msg: None)
    await asyncio.to_thread(logs.mkdir, parents=True, exist_ok=True)
    database = f"mr_bench_{settings.topic_prefix.strip('.').replace('-', '_')}_router"
    db_url = await infra.create_database(server_url, database)
    try:
        await migrate(db_url)
        await infra.create_topics(
            settings.kafka_bootstrap_servers, settings.all_topics(), partitions=settings.topic_partitions
        )
        services = ServiceProcesses(
            infra.service_env(settings, MR_DATABASE_URL=db_url, **(env or {})),
            logs,
            failure=BenchFailure,
        )
        for i in range(routers):
            services.start("router", f"router-{i + 1}", MR_METRICS_PORT=str(free_port()))
        warm, load = messages[:warmup], messages[warmup:]
        prod = producer(settings)
        await prod.start()
        try:
            async with Database(db_url) as db:
                say(f"router warm-up: {len(warm)} mentions")
                await send_all(prod, list(warm))
                await _wait_stored(db, services, len(warm), stall_timeout_s=stall_timeout_s)
                await _wait_groups(settings, {settings.group("router"): routers})
                pids = services.pids()
                groups: dict[str, list[int]] = {name: [pid] for name, pid in pids.items()}
                groups["kafka"] = infra.backing_pids()["kafka"]
                groups["postgres"] = await db.backend_pids(database)
                meter = infra.CpuMeter(groups)
                sampler = RssSampler(pids)
                sampling = asyncio.Event()
                sampler_task = asyncio.create_task(sampler.run(sampling))
                say(f"router throughput: {len(load)} mentions")
                meter.start()
                started = time.perf_counter()
                await send_all(prod, list(load))
                finished = await _wait_stored(db, services, len(messages), stall_timeout_s=stall_timeout_s)
                # With the backends the router's pool opened during the run (bench.pipeline._stop_meter).
                cpu = await _stop_meter(meter, db, database)
                sampling.set()
                await sampler_task
                assignments = await db.assignments()
        finally:
            await prod.stop()
            codes = services.stop(timeout=20.0)
        if any(code != 0 for code in codes.values()):
            raise BenchFailure(f"router processes did not stop cleanly: {codes}")
        elapsed = finished - started
        router_cpu = sum(v for k, v in cpu["cpu_s"].items() if k.startswith("router"))
        return {
            "routers": routers,
            "mentions": len(load),
            "assignments": assignments,
            "seconds": round(elapsed, 3),
            "throughput_per_s": round(len(load) / elapsed, 1),
            "cpu_us_per_mention": {k: round(v / len(load) * 1e6) for k, v in cpu["cpu_s"].items()},
            "router_cpu_us_per_mention": round(router_cpu / len(load) * 1e6),
            "rss": sampler.result(),
            "other_load_share": round(cpu["other_cpu_s"] / cpu["machine_capacity_cpu_s"], 3)
            if cpu["machine_capacity_cpu_s"]
            else None,
        }
    finally:
        await infra.drop_database(server_url, database)


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    def messages(settings: Settings, run_id: str) -> list[OutMessage]:
        print(f"classifying {WARMUP + args.count} generated mentions (before any clock starts)", flush=True)  # noqa: T201
        return classified(WARMUP + args.count, run_id=run_id, settings=settings)

    async def run(
        settings: Settings, made: Sequence[OutMessage], logs: Path, server_url: str
    ) -> dict[str, Any]:
        return await run_router(
            settings=settings,
            server_url=server_url,
            messages=made,
            warmup=WARMUP,
            routers=args.routers,
            logs=logs,
            say=lambda m: print(m, flush=True),  # noqa: T201
        )

    return await alone.measure(
        "router", run_prefix="benchr", no_relay=args.no_relay, messages=messages, run=run
    )


def main(argv: list[str] | None = None) -> int:
    return alone.cli("python -m bench.router_bench", __doc__, argv, processes="routers", measure_with=_main)


if __name__ == "__main__":
    raise SystemExit(main())
