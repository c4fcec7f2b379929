"""`python -m bench [--quick]`: the benchmark behind `make bench` and `make bench-quick`.

Runs, against the real broker and database (from MR_KAFKA_BOOTSTRAP_SERVERS / MR_DATABASE_URL, or
started by deploy/local/ when those are unset), on a fresh topic prefix and a fresh database:
the raw produce rate and a bare aiokafka relay (the ceiling), then the pipeline with the classifier and
router as separate processes, with the default classifier engine and (full runs) with the rules engine;
then each stage alone (the classifier with both engines) and `mention-router classify` over a file.
Before those, in this process, the routing rules alone: evaluations per second with a 200-rule set
(bench/rules.py). Prints a table and writes bench/results/<timestamp>.json.

--quick: small counts, well under two minutes; checks that every mention is stored exactly once under
load and records the figures, but asserts no timing (`make test` runs it to catch a collapse).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import os
import secrets
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import infra
from bench.classifier_alone import run_classifier
from bench.classify_cli import classify_cli
from bench.generate import Generated, generate
from bench.pipeline import BenchFailure, PipelineConfig, run_pipeline
from bench.relay import produce_rate, relay
from bench.report import table, targets
from bench.router_bench import classified, run_router
from bench.rules import run as rules_bench
from shared.settings import REPO_ROOT, BusKind, Settings

RESULTS = REPO_ROOT / "bench" / "results"
LOGS = REPO_ROOT / "var" / "bench"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small counts (well under 2 minutes), no targets")
    p.add_argument(
        "--count", type=int, help="mentions for the throughput phase, default engine (20,000; quick 600)"
    )
    p.add_argument("--relay-count", type=int, help="messages for produce and relay (100,000; quick 10,000)")
    p.add_argument(
        "--rate",
        type=float,
        help="offered load of the latency phase, default engine, mentions/s (100; quick 50)",
    )
    p.add_argument("--latency-seconds", type=float, help="length of the latency phase (30; quick 3)")
    # One classifier: on two cores a second one adds no CPU at saturation (the same CPU per mention) and
    # doubles the per-batch fetch, produce and commit work below it (docs/performance.md).
    p.add_argument("--classifiers", type=int, default=1, help="classifier processes (consumer-group members)")
    p.add_argument("--routers", type=int, default=1, help="router processes")
    p.add_argument(
        "--router-count", type=int, help="mentions for the router-alone phase (50,000; quick 2,000)"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="MR_NAME=VALUE",
        help="a setting for the services and the relay alike (repeatable), e.g. MR_PRODUCER_LINGER_MS=5",
    )
    p.add_argument("--no-relay", action="store_true", help="skip the ceiling (for quick experiments)")
    p.add_argument(
        "--hops", action="store_true", help="split the latency into hops (costs the generator CPU)"
    )
    p.add_argument(
        "--generator-linger-ms", type=int, default=5, help="linger of the latency phase's load generator (5)"
    )
    p.add_argument("--label", default="", help="a note stored in the results, e.g. what this run tries")
    p.add_argument("--out", type=Path, help="results file (default bench/results/<timestamp>.json)")
    return p


def _say(message: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


@dataclasses.dataclass(frozen=True)
class _Sizes:
    """How much each phase runs: the full run's sizes, the quick run's, or the command line's."""

    quick: bool
    count: int
    relay_count: int
    rate: float
    rules_count: int
    rules_rate: float
    latency_seconds: float
    warmup: int
    # Sizes or settings other than the full run's, so that such runs are not compared with it.
    custom: bool

    @classmethod
    def of(cls, args: argparse.Namespace) -> _Sizes:
        quick = args.quick
        custom = not quick and any(
            v is not None for v in (args.count, args.relay_count, args.rate, args.latency_seconds)
        )
        custom = custom or (
            not quick
            and (
                args.no_relay
                or args.generator_linger_ms != 5
                or args.set
                or args.classifiers != 1
                or args.routers != 1
                or args.router_count is not None
            )
        )
        # The pipeline runs the default engine (the cascade over the model): a few hundred mentions a
        # second on two cores, so it gets fewer mentions and a lower offered load than the rules line.
        return cls(
            quick=quick,
            count=args.count or (600 if quick else 20_000),
            relay_count=args.relay_count or (10_000 if quick else 100_000),
            rate=args.rate or (50.0 if quick else 100.0),
            rules_count=0 if quick else 100_000,
            rules_rate=1_000.0,
            latency_seconds=args.latency_seconds or (3.0 if quick else 30.0),
            warmup=200,
            custom=custom,
        )

    @property
    def latency_count(self) -> int:
        return int(self.rate * self.latency_seconds)

    @property
    def stall_timeout_s(self) -> float:
        return 60.0 if self.quick else 120.0


def _overrides(items: list[str]) -> dict[str, str]:
    """The `--set MR_NAME=VALUE` settings."""
    overrides: dict[str, str] = {}
    for item in items:
        name, _, value = item.partition("=")
        if not name.startswith("MR_") or not value:
            raise SystemExit(f"--set wants MR_NAME=VALUE, got {item!r}")
        overrides[name] = value
    return overrides


@dataclasses.dataclass(frozen=True)
class _Bench:
    """One run's phases, against one broker and database, on the run's own topic prefix."""

    args: argparse.Namespace
    sizes: _Sizes
    overrides: dict[str, str]
    settings: Settings
    bootstrap: str
    server_url: str
    run_id: str
    logs: Path

    async def header(self, stamp: str) -> dict[str, Any]:
        """The result's description of the run: when, which mode, the machine and the settings."""
        settings, sizes = self.settings, self.sizes
        return {
            "timestamp": stamp,
            "mode": "quick" if sizes.quick else "custom" if sizes.custom else "full",
            "label": self.args.label,
            "command": " ".join(["python -m bench", *sys.argv[1:]]),
            "machine": {**infra.machine(), "postgres": await infra.postgres_version(self.server_url)},
            "settings": {
                "partitions": settings.topic_partitions,
                "producer_linger_ms": settings.producer_linger_ms,
                "producer_max_batch_size": settings.producer_max_batch_size,
                "consumer_max_records": settings.consumer_max_records,
                "generator_linger_ms": self.args.generator_linger_ms,
                "classifier_engine": settings.classifier_engine.value,
                "classifier_model": str(settings.classifier_model.relative_to(REPO_ROOT))
                if settings.classifier_model.is_relative_to(REPO_ROOT)
                else str(settings.classifier_model),
                "overrides": self.overrides,
            },
            "logs": str(self.logs.relative_to(REPO_ROOT)),
        }

    def rules(self) -> dict[str, Any]:
        """The rule engine alone, on one core, while the broker and the database are still idle."""
        _say("routing rules: 200 rules, one core, against the straightforward loop")
        quick = self.sizes.quick
        rules = rules_bench(mentions=2_000 if quick else 10_000, repeats=2 if quick else 3)
        if not rules["agrees_with_reference"]:
            raise BenchFailure(
                f"routing rules: the compiled evaluator disagrees with the straightforward loop on "
                f"{rules['disagreements']} mentions"
            )
        return rules

    def generate(self) -> tuple[list[Generated], dict[str, Any]]:
        """The mentions of the ceiling and the default engine's pipeline, and the workload's description."""
        sizes = self.sizes
        # The relay may want more messages than the pipeline; its extra ones never reach the pipeline.
        total = sizes.warmup + max(
            sizes.count + sizes.latency_count,
            sizes.relay_count,
            sizes.rules_count + int(sizes.rules_rate * sizes.latency_seconds),
        )
        _say(f"generating {total} mentions (300-1,500 characters)")
        messages = generate(total, run_id=self.run_id, topic=self.settings.topic_raw)
        # Hundreds of thousands of long-lived objects: keep the collector from walking them in the middle
        # of the latency phase, where a 100 ms pause of the load generator would count as pipeline latency.
        gc.collect()
        gc.freeze()
        workload = {
            "mentions": sizes.count,
            "warmup": sizes.warmup,
            "mean_text_chars": round(sum(g.chars for g in messages) / len(messages)),
            "mean_message_bytes": round(sum(len(g.message.value) for g in messages) / len(messages)),
        }
        return messages, workload

    async def ceiling(self, messages: list[Generated]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The raw produce rate and a bare consume -> produce relay: what the pipeline is held against."""
        settings, warmup = self.settings, self.sizes.warmup
        sample = [g.message for g in messages[warmup : warmup + self.sizes.relay_count]]
        relay_in, relay_out = settings.topic("bench.relay.in"), settings.topic("bench.relay.out")
        await infra.create_topics(self.bootstrap, [relay_in, relay_out], partitions=settings.topic_partitions)
        _say(f"ceiling: produce {len(sample)} messages, then relay them")
        produced = await produce_rate(settings, sample, relay_in)
        relayed = await relay(
            settings, source=relay_in, target=relay_out, count=len(sample), group=settings.group("relay")
        )
        return produced.as_dict(), relayed.as_dict()

    def pipeline_config(self) -> PipelineConfig:
        args, sizes = self.args, self.sizes
        return PipelineConfig(
            count=sizes.count,
            warmup=sizes.warmup,
            latency_rate=sizes.rate,
            latency_seconds=sizes.latency_seconds,
            classifiers=args.classifiers,
            routers=args.routers,
            env=self.overrides,
            stall_timeout_s=sizes.stall_timeout_s,
            hops=args.hops,
            generator_linger_ms=args.generator_linger_ms,
        )

    async def pipeline(self, messages: list[Generated]) -> dict[str, Any]:
        """The pipeline with the default engine."""
        sizes = self.sizes
        _say(f"pipeline with the default engine ({self.settings.classifier_engine.value})")
        return await run_pipeline(
            self.pipeline_config(),
            settings=self.settings,
            server_url=self.server_url,
            messages=messages[: sizes.warmup + sizes.count + sizes.latency_count],
            logs=self.logs,
            progress=_say,
        )

    async def pipeline_rules(self) -> dict[str, Any]:
        """The rules engine's own line: what the pipeline carries when the classifier costs least."""
        sizes = self.sizes
        rules_settings = self.settings.model_copy(
            update={"topic_prefix": f"{self.settings.topic_prefix}rules."}
        )
        rules_latency = int(sizes.rules_rate * sizes.latency_seconds)
        _say(f"pipeline with the rules engine: {sizes.rules_count} mentions")
        return await run_pipeline(
            dataclasses.replace(
                self.pipeline_config(),
                count=sizes.rules_count,
                latency_rate=sizes.rules_rate,
                env={**self.overrides, "MR_CLASSIFIER_ENGINE": "rules"},
                stall_timeout_s=120.0,
            ),
            settings=rules_settings,
            server_url=self.server_url,
            messages=generate(
                sizes.warmup + sizes.rules_count + rules_latency,
                run_id=f"{self.run_id}p",
                topic=rules_settings.topic_raw,
            ),
            logs=self.logs / "pipeline-rules",
            progress=_say,
        )

    async def router_alone(self) -> dict[str, Any]:
        """The router alone (issue 5): classified events made here before its clock starts, router
        processes storing them in PostgreSQL and publishing to the department topics."""
        warmup = self.sizes.warmup
        router_count = self.args.router_count or (2_000 if self.sizes.quick else 50_000)
        router_settings = self.settings.model_copy(
            update={"topic_prefix": f"{self.settings.topic_prefix}router."}
        )
        _say(f"router alone: classifying {router_count} mentions first (no clock running)")
        router_messages = classified(
            warmup + router_count, run_id=f"{self.run_id}r", settings=router_settings
        )
        return await run_router(
            settings=router_settings,
            server_url=self.server_url,
            messages=router_messages,
            warmup=warmup,
            routers=self.args.routers,
            logs=self.logs / "router-alone",
            env=self.overrides,
            stall_timeout_s=self.sizes.stall_timeout_s,
            say=_say,
        )

    async def classifier_alone(self, key: str, engine: str | None, n: int) -> dict[str, Any]:
        """The classifier alone (issues 4, 14): generated raw events through classifier processes on
        Kafka, with `engine` (None: the default)."""
        warmup = self.sizes.warmup
        classifier_settings = self.settings.model_copy(
            update={"topic_prefix": f"{self.settings.topic_prefix}{key.replace('_', '-')}."}
        )
        engine_env = {**self.overrides, **({"MR_CLASSIFIER_ENGINE": engine} if engine else {})}
        _say(f"{key.replace('_', ' ')} alone: {n} mentions through {self.args.classifiers} classifier")
        return await run_classifier(
            settings=classifier_settings,
            messages=[
                g.message
                for g in generate(
                    warmup + n, run_id=f"{self.run_id}{key[-1]}", topic=classifier_settings.topic_raw
                )
            ],
            warmup=warmup,
            classifiers=self.args.classifiers,
            logs=self.logs / f"{key.replace('_', '-')}-alone",
            env=engine_env,
            stall_timeout_s=self.sizes.stall_timeout_s,
            say=_say,
        )

    async def classify_cli(self) -> dict[str, Any]:
        """`mention-router classify` over a file, start-up included, with the default engine."""
        cli_count = 500 if self.sizes.quick else 2_000
        _say(f"mention-router classify: {cli_count} mentions, start-up included")
        return await asyncio.to_thread(classify_cli, cli_count, self.logs / "classify-cli")


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = _Sizes.of(args)
    overrides = _overrides(args.set)
    os.environ.update(overrides)  # the relay's settings and the services' see the same values
    bootstrap, server_url = infra.backing_services()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_id = f"bench{stamp.lower()}{secrets.token_hex(2)}"
    settings = Settings().model_copy(
        update={"bus": BusKind.KAFKA, "kafka_bootstrap_servers": bootstrap, "topic_prefix": f"{run_id}."}
    )
    logs = LOGS / run_id
    logs.mkdir(parents=True, exist_ok=True)
    bench = _Bench(args, sizes, overrides, settings, bootstrap, server_url, run_id, logs)

    result = await bench.header(stamp)
    result["rules"] = bench.rules()
    messages, result["workload"] = bench.generate()
    try:
        if not args.no_relay:
            result["produce"], result["relay"] = await bench.ceiling(messages)
        pipeline = await bench.pipeline(messages)
        if sizes.rules_count:
            result["pipeline_rules"] = await bench.pipeline_rules()
        result["router"] = await bench.router_alone()
        for key, engine, n in (
            ("classifier", None, 600 if sizes.quick else 5_000),
            ("classifier_rules", "rules", 2_000 if sizes.quick else 50_000),
        ):
            result[key] = await bench.classifier_alone(key, engine, n)
        result["classify_cli"] = await bench.classify_cli()
    finally:
        await infra.delete_topics(bootstrap, settings.topic_prefix)
    _derive(result, pipeline)
    result["targets"] = targets(result)
    return result


def _derive(result: dict[str, Any], pipeline: dict[str, Any]) -> None:
    """The figures computed from the phases' own: the ratios to the bare relay, the peak RSS by service."""
    for p in (pipeline, result.get("pipeline_rules")):
        if "relay" in result and p is not None:
            p["relay_ratio"] = round(p["throughput_per_s"] / result["relay"]["throughput_per_s"], 4)
            p["produce_ratio"] = round(p["throughput_per_s"] / result["produce"]["throughput_per_s"], 4)
        if p is not None:
            p["latency_ms"] = p["latency"]["latency_ms"]
    if "relay" in result:
        for stage in ("router", "classifier", "classifier_rules"):
            result[stage]["relay_ratio"] = round(
                result[stage]["throughput_per_s"] / result["relay"]["throughput_per_s"], 4
            )
    pipeline["latency_ms"] = pipeline["latency"]["latency_ms"]
    result["pipeline"] = pipeline
    rss = {name: v["peak_mb"] for name, v in pipeline["rss"].items()}
    per_service: dict[str, float] = {}
    for name, mb in rss.items():
        service = name.rsplit("-", 1)[0]
        per_service[service] = max(per_service.get(service, 0.0), mb)
    result["rss_mb"] = {**per_service, **{n: mb for n, mb in rss.items() if n not in per_service}}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    started = time.monotonic()
    try:
        result = asyncio.run(_run(args))
    except BenchFailure as exc:
        _say(f"FAILED: {exc}")
        return 1
    result["runtime_s"] = round(time.monotonic() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "" if result["mode"] == "full" else f"-{result['mode']}"
    out = args.out or RESULTS / f"{result['timestamp']}{suffix}.json"
    out.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    sys.stdout.write(table(result))
    sys.stdout.write(f"  ({result['runtime_s']:.0f} s; results in {out})\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
