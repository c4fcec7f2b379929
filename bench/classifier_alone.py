"""The classifier service alone, as deployed: classifier processes consuming `mentions.raw` from real Kafka
and publishing `mentions.classified`, against the bare relay measured in the same run (issue 4: >= 50%).

The raw events are the pipeline's generated mentions. After a warm-up that leaves the consumer group
stable, N events are published as fast as the producer goes; the clock runs from the first publish until
`mentions.classified` holds every classified event (its end offsets, polled every 50 ms: the service
publishes one event per mention, idempotently, so the offsets count them). Peak RSS and CPU seconds per
process come from /proc. The engine is the configured one (MR_CLASSIFIER_ENGINE, default `cascade`).

    python -m bench.classifier_alone [--count 50000] [--classifiers 1] [--no-relay]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import alone, infra
from bench.alone import WARMUP
from bench.generate import generate
from bench.pipeline import BenchFailure, RssSampler, _end_offsets, _wait_groups
from bench.relay import producer, send_all
from devsupport.processes import ServiceProcesses, free_port
from shared.bus.base import OutMessage
from shared.settings import Settings


async def _wait_classified(
    settings: Settings, services: ServiceProcesses, target: int, *, stall_timeout_s: float
) -> float:
    """Poll `mentions.classified`'s end offsets until they reach `target`; the time they did."""
    last, last_change = -1, time.perf_counter()
    while True:
        services.check_alive()
        n = await _end_offsets(settings, settings.topic_classified)
        now = time.perf_counter()
        if n >= target:
            return now
        if n != last:
            last, last_change = n, now
        elif now - last_change > stall_timeout_s:
            raise BenchFailure(f"no progress for {stall_timeout_s:.0f}s at {n} of {target} classified")
        await asyncio.sleep(0.05)


async def run_classifier(
    *,
    settings: Settings,
    messages: Sequence[OutMessage],
    warmup: int,
    classifiers: int,
    logs: Path,
    env: dict[str, str] | None = None,
    stall_timeout_s: float = 90.0,
    say: Any = None,
) -> dict[str, Any]:
    """Warm-up, then the timed batch; `messages` (for `mentions.raw`) holds both, warm-up first."""
    say = say or (lambda _msg: None)
    await asyncio.to_thread(logs.mkdir, parents=True, exist_ok=True)
    await infra.create_topics(
        settings.kafka_bootstrap_servers, settings.all_topics(), partitions=settings.topic_partitions
    )
    services = ServiceProcesses(
        infra.service_env(settings, **(env or {})),
        logs,
        failure=BenchFailure,
    )
    for i in range(classifiers):
        services.start("classifier", f"classifier-{i + 1}", MR_METRICS_PORT=str(free_port()))
    warm, load = messages[:warmup], messages[warmup:]
    prod = producer(settings)
    await prod.start()
    try:
        say(f"classifier warm-up: {len(warm)} mentions")
        await send_all(prod, list(warm))
        await _wait_classified(settings, services, len(warm), stall_timeout_s=stall_timeout_s)
        await _wait_groups(settings, {settings.group("classifier"): classifiers})
        pids = services.pids()
        groups: dict[str, list[int]] = {name: [pid] for name, pid in pids.items()}
        groups["kafka"] = infra.backing_pids()["kafka"]
        meter = infra.CpuMeter(groups)
        sampler = RssSampler(pids)
        sampling = asyncio.Event()
        sampler_task = asyncio.create_task(sampler.run(sampling))
        say(f"classifier throughput: {len(load)} mentions")
        meter.start()
        started = time.perf_counter()
        await send_all(prod, list(load))
        finished = await _wait_classified(settings, services, len(messages), stall_timeout_s=stall_timeout_s)
        cpu = meter.stop()
        sampling.set()
        await sampler_task
        classified = await _end_offsets(settings, settings.topic_classified)
        dead = await _end_offsets(settings, settings.topic_dlq)
    finally:
        await prod.stop()
        codes = services.stop(timeout=20.0)
    if any(code != 0 for code in codes.values()):
        raise BenchFailure(f"classifier processes did not stop cleanly: {codes}")
    if classified != len(messages) or dead:
        raise BenchFailure(f"{len(messages)} published, {classified} classified, {dead} dead-lettered")
    elapsed = finished - started
    classifier_cpu = sum(v for k, v in cpu["cpu_s"].items() if k.startswith("classifier"))
    return {
        "classifiers": classifiers,
        "engine": (env or {}).get("MR_CLASSIFIER_ENGINE")
        or os.environ.get("MR_CLASSIFIER_ENGINE")
        or Settings.model_fields["classifier_engine"].default.value,
        "mentions": len(load),
        "seconds": round(elapsed, 3),
        "throughput_per_s": round(len(load) / elapsed, 1),
        "cpu_us_per_mention": {k: round(v / len(load) * 1e6) for k, v in cpu["cpu_s"].items()},
        "classifier_cpu_us_per_mention": round(classifier_cpu / len(load) * 1e6),
        "rss": sampler.result(),
        "other_load_share": round(cpu["other_cpu_s"] / cpu["machine_capacity_cpu_s"], 3)
        if cpu["machine_capacity_cpu_s"]
        else None,
    }


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    def messages(settings: Settings, run_id: str) -> list[OutMessage]:
        return [g.message for g in generate(WARMUP + args.count, run_id=run_id, topic=settings.topic_raw)]

    async def run(
        settings: Settings, made: Sequence[OutMessage], logs: Path, _server_url: str
    ) -> dict[str, Any]:
        return await run_classifier(
            settings=settings,
            messages=made,
            warmup=WARMUP,
            classifiers=args.classifiers,
            logs=logs,
            say=lambda m: print(m, flush=True),  # noqa: T201
        )

    return await alone.measure(
        "classifier", run_prefix="benchc", no_relay=args.no_relay, messages=messages, run=run
    )


def main(argv: list[str] | None = None) -> int:
    return alone.cli(
        "python -m bench.classifier_alone", __doc__, argv, processes="classifiers", measure_with=_main
    )


if __name__ == "__main__":
    raise SystemExit(main())
