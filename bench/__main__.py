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
from bench.generate import generate
from bench.pipeline import BenchFailure, PipelineConfig, run_pipeline
from bench.relay import produce_rate, relay
from bench.router_bench import classified, run_router
from bench.rules import run as rules_bench
from shared.settings import REPO_ROOT, BusKind, Settings

RESULTS = REPO_ROOT / "bench" / "results"
LOGS = REPO_ROOT / "var" / "bench"

TARGETS = {
    "pipeline.throughput_per_s": (">=", 5_000.0),
    "pipeline.relay_ratio": (">=", 0.25),
    "pipeline.latency_ms.p99": ("<", 250.0),
    "rss_mb.*": ("<", 200.0),
    "rules.evaluations_per_s": (">=", 50_000.0),
}


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


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    # The pipeline runs the default engine (the cascade over the model): a few hundred mentions a second
    # on two cores, so it gets fewer mentions and a lower offered load than the rules line below.
    count = args.count or (600 if quick else 20_000)
    relay_count = args.relay_count or (10_000 if quick else 100_000)
    rate = args.rate or (50.0 if quick else 100.0)
    rules_count = 0 if quick else 100_000
    rules_rate = 1_000.0
    latency_seconds = args.latency_seconds or (3.0 if quick else 30.0)
    warmup = 200
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
    latency_count = int(rate * latency_seconds)

    overrides: dict[str, str] = {}
    for item in args.set:
        name, _, value = item.partition("=")
        if not name.startswith("MR_") or not value:
            raise SystemExit(f"--set wants MR_NAME=VALUE, got {item!r}")
        overrides[name] = value
    os.environ.update(overrides)  # the relay's settings and the services' see the same values

    bootstrap, server_url = infra.backing_services()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_id = f"bench{stamp.lower()}{secrets.token_hex(2)}"
    settings = Settings().model_copy(
        update={"bus": BusKind.KAFKA, "kafka_bootstrap_servers": bootstrap, "topic_prefix": f"{run_id}."}
    )
    logs = LOGS / run_id
    logs.mkdir(parents=True, exist_ok=True)

    result: dict[str, Any] = {
        "timestamp": stamp,
        # "custom" when the sizes differ from the full run's, so that such runs are not compared with it.
        "mode": "quick" if quick else "custom" if custom else "full",
        "label": args.label,
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
        "machine": {**infra.machine(), "postgres": await infra.postgres_version(server_url)},
        "settings": {
            "partitions": settings.topic_partitions,
            "producer_linger_ms": settings.producer_linger_ms,
            "producer_max_batch_size": settings.producer_max_batch_size,
            "consumer_max_records": settings.consumer_max_records,
            "generator_linger_ms": args.generator_linger_ms,
            "classifier_engine": settings.classifier_engine.value,
            "classifier_model": str(settings.classifier_model.relative_to(REPO_ROOT))
            if settings.classifier_model.is_relative_to(REPO_ROOT)
            else str(settings.classifier_model),
            "overrides": overrides,
        },
        "logs": str(logs.relative_to(REPO_ROOT)),
    }

    # The rule engine alone, on one core, while the broker and the database are still idle.
    _say("routing rules: 200 rules, one core, against the straightforward loop")
    result["rules"] = rules_bench(mentions=2_000 if quick else 10_000, repeats=2 if quick else 3)
    if not result["rules"]["agrees_with_reference"]:
        raise BenchFailure(
            f"routing rules: the compiled evaluator disagrees with the straightforward loop on "
            f"{result['rules']['disagreements']} mentions"
        )

    # The relay may want more messages than the pipeline; its extra ones never reach the pipeline.
    total = warmup + max(count + latency_count, relay_count, rules_count + int(rules_rate * latency_seconds))
    _say(f"generating {total} mentions (300-1,500 characters)")
    messages = generate(total, run_id=run_id, topic=settings.topic_raw)
    # Hundreds of thousands of long-lived objects: keep the collector from walking them in the middle
    # of the latency phase, where a 100 ms pause of the load generator would count as pipeline latency.
    gc.collect()
    gc.freeze()
    result["workload"] = {
        "mentions": count,
        "warmup": warmup,
        "mean_text_chars": round(sum(g.chars for g in messages) / len(messages)),
        "mean_message_bytes": round(sum(len(g.message.value) for g in messages) / len(messages)),
    }
    try:
        if not args.no_relay:
            sample = [g.message for g in messages[warmup : warmup + relay_count]]
            relay_in, relay_out = settings.topic("bench.relay.in"), settings.topic("bench.relay.out")
            await infra.create_topics(bootstrap, [relay_in, relay_out], partitions=settings.topic_partitions)
            _say(f"ceiling: produce {len(sample)} messages, then relay them")
            produced = await produce_rate(settings, sample, relay_in)
            relayed = await relay(
                settings, source=relay_in, target=relay_out, count=len(sample), group=settings.group("relay")
            )
            result["produce"] = produced.as_dict()
            result["relay"] = relayed.as_dict()
        cfg = PipelineConfig(
            count=count,
            warmup=warmup,
            latency_rate=rate,
            latency_seconds=latency_seconds,
            classifiers=args.classifiers,
            routers=args.routers,
            env=overrides,
            stall_timeout_s=60.0 if quick else 120.0,
            hops=args.hops,
            generator_linger_ms=args.generator_linger_ms,
        )
        _say(f"pipeline with the default engine ({settings.classifier_engine.value})")
        pipeline = await run_pipeline(
            cfg,
            settings=settings,
            server_url=server_url,
            messages=messages[: warmup + count + latency_count],
            logs=logs,
            progress=_say,
        )
        if rules_count:
            # The rules engine's own line: what the pipeline carries when the classifier costs least.
            rules_settings = settings.model_copy(update={"topic_prefix": f"{settings.topic_prefix}rules."})
            rules_latency = int(rules_rate * latency_seconds)
            _say(f"pipeline with the rules engine: {rules_count} mentions")
            result["pipeline_rules"] = await run_pipeline(
                dataclasses.replace(
                    cfg,
                    count=rules_count,
                    latency_rate=rules_rate,
                    env={**overrides, "MR_CLASSIFIER_ENGINE": "rules"},
                    stall_timeout_s=120.0,
                ),
                settings=rules_settings,
                server_url=server_url,
                messages=generate(
                    warmup + rules_count + rules_latency, run_id=f"{run_id}p", topic=rules_settings.topic_raw
                ),
                logs=logs / "pipeline-rules",
                progress=_say,
            )
        # The router alone (issue 5): classified events made here before its clock starts, router
        # processes storing them in PostgreSQL and publishing to the department topics.
        router_count = args.router_count or (2_000 if quick else 50_000)
        router_settings = settings.model_copy(update={"topic_prefix": f"{settings.topic_prefix}router."})
        _say(f"router alone: classifying {router_count} mentions first (no clock running)")
        router_messages = classified(warmup + router_count, run_id=f"{run_id}r", settings=router_settings)
        result["router"] = await run_router(
            settings=router_settings,
            server_url=server_url,
            messages=router_messages,
            warmup=warmup,
            routers=args.routers,
            logs=logs / "router-alone",
            env=overrides,
            stall_timeout_s=60.0 if quick else 120.0,
            say=_say,
        )
        # The classifier alone (issues 4, 14): generated raw events through classifier processes on Kafka,
        # with the default engine, then with the rules engine (its own line).
        for key, engine, n in (
            ("classifier", None, 600 if quick else 5_000),
            ("classifier_rules", "rules", 2_000 if quick else 50_000),
        ):
            classifier_settings = settings.model_copy(
                update={"topic_prefix": f"{settings.topic_prefix}{key.replace('_', '-')}."}
            )
            engine_env = {**overrides, **({"MR_CLASSIFIER_ENGINE": engine} if engine else {})}
            _say(f"{key.replace('_', ' ')} alone: {n} mentions through {args.classifiers} classifier")
            result[key] = await run_classifier(
                settings=classifier_settings,
                messages=[
                    g.message
                    for g in generate(
                        warmup + n, run_id=f"{run_id}{key[-1]}", topic=classifier_settings.topic_raw
                    )
                ],
                warmup=warmup,
                classifiers=args.classifiers,
                logs=logs / f"{key.replace('_', '-')}-alone",
                env=engine_env,
                stall_timeout_s=60.0 if quick else 120.0,
                say=_say,
            )
        # `mention-router classify` over a file, start-up included, with the default engine.
        cli_count = 500 if quick else 2_000
        _say(f"mention-router classify: {cli_count} mentions, start-up included")
        result["classify_cli"] = await asyncio.to_thread(classify_cli, cli_count, logs / "classify-cli")
    finally:
        await infra.delete_topics(bootstrap, settings.topic_prefix)

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
    result["targets"] = _targets(result)
    return result


def _targets(result: dict[str, Any]) -> dict[str, Any]:
    p = result["pipeline"]
    out: dict[str, Any] = {}
    rules = result.get("pipeline_rules")
    if rules is not None:
        out["rules_throughput_per_s"] = {
            "target": ">= 5000 (rules engine)",
            "value": rules["throughput_per_s"],
            "met": rules["throughput_per_s"] >= 5_000,
        }
        out["rules_relay_ratio"] = {
            "target": ">= 0.25 (rules engine)",
            "value": rules.get("relay_ratio"),
            "met": rules.get("relay_ratio") is not None and rules["relay_ratio"] >= 0.25,
        }
        out["rules_latency_p99_ms"] = {
            "target": "< 250 at 1000/s (rules engine)",
            "value": rules["latency_ms"]["p99"],
            "met": rules["latency"]["offered_per_s"] >= 1_000 and rules["latency_ms"]["p99"] < 250,
        }
    rss = max(v["peak_mb"] for name, v in p["rss"].items() if not name.startswith("classifier"))
    out["rss_mb_max"] = {"target": "< 200 per service but the classifier", "value": rss, "met": rss < 200}
    router = result["router"]
    out["router_stored_per_s"] = {
        "target": ">= 5000",
        "value": router["throughput_per_s"],
        "met": router["throughput_per_s"] >= 5_000,
    }
    router_rss = max(v["peak_mb"] for v in router["rss"].values())
    out["router_rss_mb"] = {"target": "< 150", "value": router_rss, "met": router_rss < 150}
    c = result["classifier"]
    out["classifier_per_s"] = {
        "target": ">= 150 (default engine)",
        "value": c["throughput_per_s"],
        "met": c["throughput_per_s"] >= 150,
    }
    classifier_rss = max(
        [v["peak_mb"] for v in c["rss"].values()]
        + [v["peak_mb"] for name, v in p["rss"].items() if name.startswith("classifier")]
    )
    out["classifier_rss_mb"] = {
        "target": "< 250 (default model)",
        "value": classifier_rss,
        "met": classifier_rss < 250,
    }
    cr = result["classifier_rules"]
    out["classifier_rules_relay_ratio"] = {
        "target": ">= 0.5 (rules engine)",
        "value": cr.get("relay_ratio"),
        "met": cr.get("relay_ratio") is not None and cr["relay_ratio"] >= 0.5,
    }
    cli = result["classify_cli"]
    out["classify_cli_per_s"] = {
        "target": f">= 150 over {cli['mentions']:,} mentions, start-up included",
        "value": cli["per_s"],
        "met": cli["per_s"] >= 150,
    }
    r = result["rules"]
    out["rules_evaluations_per_s"] = {
        "target": f">= 50000 per core, {r['rules']} rules",
        "value": r["evaluations_per_s"],
        "met": r["evaluations_per_s"] >= 50_000,
    }
    return out


def table(result: dict[str, Any]) -> str:
    p = result["pipeline"]
    rows: list[tuple[str, str, str]] = []
    if "relay" in result:
        rows += [
            ("raw produce (1 producer)", f"{result['produce']['throughput_per_s']:,.0f} msg/s", ""),
            ("bare relay (consume -> produce)", f"{result['relay']['throughput_per_s']:,.0f} msg/s", ""),
        ]
    t = result["targets"]

    def mark(key: str) -> str:
        if result["mode"] == "quick":
            return "(quick: not judged)"
        return f"target {t[key]['target']}: {'met' if t[key]['met'] else 'MISSED'}"

    engine = result["settings"]["classifier_engine"]
    for line, q, judged in (
        (f"pipeline, engine {engine}", p, False),
        ("pipeline, engine rules", result.get("pipeline_rules"), True),
    ):
        if q is None:
            continue
        ql = q["latency"]
        rows.append(
            (
                f"{line}, {q['mentions']:,} mentions ({q['classifiers']} classifier, {q['routers']} router)",
                f"{q['throughput_per_s']:,.0f} mentions/s",
                mark("rules_throughput_per_s") if judged else f"limited by {q.get('limiting_stage', '?')}",
            )
        )
        if "relay_ratio" in q:
            rows.append(
                (
                    f"{line} / bare relay",
                    f"{q['relay_ratio']:.1%}",
                    mark("rules_relay_ratio") if judged else "",
                )
            )
        rows += [
            (
                f"{line}: latency p50 at {ql['offered_per_s']:,.0f}/s ({ql['routed_events']:,} events)",
                f"{ql['latency_ms']['p50']:,.1f} ms",
                "",
            ),
            (
                f"{line}: latency p99 at {ql['offered_per_s']:,.0f}/s",
                f"{ql['latency_ms']['p99']:,.1f} ms",
                mark("rules_latency_p99_ms") if judged else "",
            ),
        ]
    for name, mb in sorted(p["rss"].items()):
        rows.append((f"peak RSS {name}", f"{mb['peak_mb']:.0f} MB", mark("rss_mb_max")))
    us = p["cpu_us_per_mention"]
    for name in sorted(us):
        rows.append((f"CPU per mention, {name}", f"{us[name]:,} µs", ""))
    rows += [
        (
            "CPU per mention, pipeline (services + broker + database)",
            f"{p['pipeline_cpu_us_per_mention']:,} µs",
            "",
        ),
        ("classifier share of the pipeline's CPU", f"{p['classifier_cpu_share']:.0%}", ""),
        (
            f"CPU-bound ceiling on {result['machine']['cores']} idle cores (cores / CPU per mention)",
            f"{p['cpu_bound_capacity_per_s']:,} mentions/s",
            "",
        ),
        ("machine CPU used by other processes meanwhile", f"{p['other_load_share']:.0%}", ""),
    ]
    ro = result["router"]
    rows += [
        (
            f"router alone, {ro['mentions']:,} mentions -> PostgreSQL + topics ({ro['routers']} router)",
            f"{ro['throughput_per_s']:,.0f} mentions/s",
            mark("router_stored_per_s"),
        ),
        *([("router alone / bare relay", f"{ro['relay_ratio']:.1%}", "")] if "relay_ratio" in ro else []),
        ("router CPU per mention (router alone)", f"{ro['router_cpu_us_per_mention']:,} µs", ""),
        *(
            (f"peak RSS {name} (router alone)", f"{mb['peak_mb']:.0f} MB", mark("router_rss_mb"))
            for name, mb in sorted(ro["rss"].items())
        ),
    ]
    for key, rate_mark, relay_mark in (
        ("classifier", "classifier_per_s", ""),
        ("classifier_rules", "", "classifier_rules_relay_ratio"),
    ):
        co = result[key]
        rows += [
            (
                f"classifier alone, {co['mentions']:,} mentions raw -> classified "
                f"({co['classifiers']} classifier, engine {co['engine']})",
                f"{co['throughput_per_s']:,.0f} mentions/s",
                mark(rate_mark) if rate_mark else "",
            ),
            *(
                [
                    (
                        f"  {co['engine']}: / bare relay",
                        f"{co['relay_ratio']:.1%}",
                        mark(relay_mark) if relay_mark else "",
                    )
                ]
                if "relay_ratio" in co
                else []
            ),
            (
                f"  {co['engine']}: classifier CPU per mention",
                f"{co['classifier_cpu_us_per_mention']:,} µs",
                "",
            ),
            *(
                (f"  {co['engine']}: peak RSS {name}", f"{mb['peak_mb']:.0f} MB", mark("classifier_rss_mb"))
                for name, mb in sorted(co["rss"].items())
            ),
        ]
    cli = result["classify_cli"]
    rows.append(
        (
            f"mention-router classify, {cli['mentions']:,} mentions, start-up included",
            f"{cli['per_s']:,.0f} mentions/s",
            mark("classify_cli_per_s"),
        )
    )
    r = result["rules"]
    rows += [
        (
            f"rule evaluations, {r['rules']} rules, 1 core (mention x whole rule set)",
            f"{r['evaluations_per_s']:,} /s",
            mark("rules_evaluations_per_s"),
        ),
        (f"rule checks ({r['rules']} per evaluation)", f"{r['rule_checks_per_s']:,} /s", ""),
        (
            "rule evaluations, straightforward loop (baseline)",
            f"{r['reference_per_s']:,} /s",
            f"compiled {r['speedup']}x; decisions {'agree' if r['agrees_with_reference'] else 'DIFFER'}",
        ),
    ]
    checks = p["checks"]
    rows.append(
        (
            "stored exactly once / dead-lettered",
            f"{checks['stored']:,}/{checks['published']:,} / {checks['dead_lettered']}",
            "ok" if checks["ok"] else "FAILED",
        )
    )
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    m = result["machine"]
    head = (
        f"mention-router bench ({result['mode']}) {result['timestamp']}  commit {m['git_commit'][:10]}"
        f"{' (dirty)' if m['git_dirty'] else ''}\n"
        f"{m['cores']} cores {m['cpu_model']}, {m['memory_gb']} GB; Python {m['python']}, "
        f"aiokafka {m['aiokafka']}, Kafka {m['kafka']}, PostgreSQL {m['postgres']}\n"
    )
    lines = [f"  {a:<{width}}  {b:>{vwidth}}  {c}".rstrip() for a, b, c in rows]
    return head + "\n".join(lines) + "\n"


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
