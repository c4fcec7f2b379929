"""What Kafka security costs the pipeline (issue 16): its throughput on the secured broker against the
plaintext one, in the same run.

    python -m bench.kafka_security [--count N] [--rounds R] [--engine rules|cascade]

Variants, each the whole of bench.pipeline.run_pipeline (warm-up, throughput, a short latency phase, the
checks: nothing lost, duplicated or dead-lettered) on a fresh topic prefix and database:
- `plaintext`: the broker the tests use (127.0.0.1:19092), no authentication;
- `sasl_ssl`: the secured broker (deploy/local/kafka.sh, MR_KAFKA_SECURE=1), classifier and router as
  their own SCRAM users over TLS, the ACLs of shared/kafkaacl.py enforced;
- `sasl_plaintext`: the same broker and users without TLS, which splits what TLS costs from what SASL
  and the ACL checks cost.
Rounds run the variants in turn (ABCABC), so that a noisy neighbour on a shared machine weighs on each
alike; the figure per variant is its median over the rounds. The load generator logs in as the admin.
The rules engine by default: with the model's cascade the classifier's CPU hides the transport.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench import infra
from bench.generate import generate
from bench.pipeline import PipelineConfig, run_pipeline
from devsupport.securekafka import SecureBroker, SecureKafka, start_secured_broker
from shared import kafkaacl
from shared.settings import REPO_ROOT, BusKind, Settings

VARIANTS = ("plaintext", "sasl_ssl", "sasl_plaintext")


def _say(message: str) -> None:
    sys.stderr.write(f"[bench.kafka_security {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def _stage_env(settings: Settings, users_dir: Path) -> dict[str, dict[str, str]]:
    """Each stage's own login (the settings the services read), on the broker of `settings`."""
    if settings.kafka_security_protocol.value == "PLAINTEXT":
        return {}
    common = {
        "MR_KAFKA_SECURITY_PROTOCOL": settings.kafka_security_protocol.value,
        "MR_KAFKA_SASL_MECHANISM": settings.kafka_sasl_mechanism.value,
        "MR_KAFKA_SSL_CAFILE": str(settings.kafka_ssl_cafile),
    }
    return {
        stage: common
        | {
            "MR_KAFKA_SASL_USERNAME": f"mr-{stage}",
            "MR_KAFKA_SASL_PASSWORD_FILE": str(users_dir / f"mr-{stage}"),
        }
        for stage in ("classifier", "router")
    }


async def _variant(
    variant: str,
    *,
    plaintext: str,
    broker: SecureBroker,
    server_url: str,
    args: argparse.Namespace,
    logs: Path,
) -> dict[str, Any]:
    prefix = f"bsec{uuid.uuid4().hex[:8]}."
    secure = SecureKafka(broker, prefix=prefix)
    if variant == "plaintext":
        settings = Settings().model_copy(
            update={"bus": BusKind.KAFKA, "kafka_bootstrap_servers": plaintext, "topic_prefix": prefix}
        )
    else:
        # (the services' producer linger for the load generator too, as on the plaintext broker)
        settings = secure.settings(
            "admin", tls=variant == "sasl_ssl", producer_linger_ms=Settings().producer_linger_ms
        )
        await secure.grant(kafkaacl.bindings(settings))
    latency_count = int(args.rate * args.latency_seconds)
    cfg = PipelineConfig(
        count=args.count,
        warmup=args.warmup,
        latency_rate=args.rate,
        latency_seconds=args.latency_seconds,
        env={"MR_CLASSIFIER_ENGINE": args.engine},
        stage_env=_stage_env(settings, broker.users_dir),
    )
    messages = generate(
        args.warmup + args.count + latency_count, run_id=prefix.strip("."), topic=settings.topic_raw
    )
    _say(f"{variant}: {args.count} mentions on {settings.kafka_bootstrap_servers}")
    (logs / prefix.strip(".")).mkdir(parents=True, exist_ok=True)
    try:
        result = await run_pipeline(
            cfg, settings=settings, server_url=server_url, messages=messages, logs=logs / prefix.strip(".")
        )
    finally:
        if variant == "plaintext":
            await infra.delete_topics(plaintext, prefix)
        else:
            await secure.cleanup()
    _say(f"{variant}: {result['throughput_per_s']:.0f} mentions/s")
    return result


def _summary(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    rate = {v: statistics.median(r["throughput_per_s"] for r in rs) for v, rs in runs.items()}
    cpu = {
        v: {
            "pipeline": statistics.median(r["pipeline_cpu_us_per_mention"] for r in rs),
            **{
                k: statistics.median(r["cpu_us_per_mention"].get(k, 0) for r in rs)
                for k in ("classifier-1", "router-1", "kafka")
            },
        }
        for v, rs in runs.items()
    }
    base = rate["plaintext"]
    return {
        "throughput_per_s": rate,
        "ratio_to_plaintext": {v: round(rate[v] / base, 3) for v in rate},
        "cpu_us_per_mention": cpu,
        "latency_p50_ms": {
            v: statistics.median(r["latency"]["latency_ms"]["p50"] for r in rs) for v, rs in runs.items()
        },
        "latency_p99_ms": {
            v: statistics.median(r["latency"]["latency_ms"]["p99"] for r in rs) for v, rs in runs.items()
        },
    }


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    plaintext, server_url = infra.backing_services()
    broker = SecureBroker.from_env(start_secured_broker())
    logs = REPO_ROOT / "var" / "bench-kafka-security"
    logs.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    for round_ in range(args.rounds):
        _say(f"round {round_ + 1} of {args.rounds}")
        for variant in VARIANTS:
            runs[variant].append(
                await _variant(
                    variant, plaintext=plaintext, broker=broker, server_url=server_url, args=args, logs=logs
                )
            )
    return {"config": vars(args), "summary": _summary(runs), "runs": runs}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.kafka_security", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--count", type=int, default=10_000, help="mentions in the throughput phase")
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--rate", type=float, default=100.0, help="mentions/s of the latency phase")
    parser.add_argument("--latency-seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--engine", default="rules", choices=["rules", "cascade", "learned"])
    parser.add_argument(
        "--out", type=Path, help="the JSON result (default: bench/results/kafka-security-<UTC time>.json)"
    )
    args = parser.parse_args(argv)
    out = (
        args.out
        or REPO_ROOT
        / "bench"
        / "results"
        / f"kafka-security-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    )
    result = asyncio.run(_run(args))
    out.write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps(result["summary"], indent=2))  # noqa: T201
    _say(f"written to {out}")


if __name__ == "__main__":
    main()
