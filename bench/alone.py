"""One stage measured alone against the bare relay of the same run: what `python -m bench.router_bench`
and `python -m bench.classifier_alone` share (run id and topic prefix, the relay ceiling, the ratio,
the topics deleted afterwards, the command line)."""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import infra
from bench.relay import stage_ceiling
from shared.bus.base import OutMessage
from shared.settings import REPO_ROOT, BusKind, Settings

LOGS = REPO_ROOT / "var" / "bench"
WARMUP = 200

# (the run's settings, its id) → the warm-up and timed messages for the stage's input topic
MakeMessages = Callable[[Settings, str], Sequence[OutMessage]]
# (settings, messages, the run's log folder, the PostgreSQL server URL) → the stage's figures
RunStage = Callable[[Settings, Sequence[OutMessage], Path, str], Awaitable[dict[str, Any]]]


async def measure(
    stage: str, *, run_prefix: str, no_relay: bool, messages: MakeMessages, run: RunStage
) -> dict[str, Any]:
    bootstrap, server_url = infra.backing_services()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_id = f"{run_prefix}{stamp.lower()}{secrets.token_hex(2)}"
    settings = Settings().model_copy(
        update={"bus": BusKind.KAFKA, "kafka_bootstrap_servers": bootstrap, "topic_prefix": f"{run_id}."}
    )
    made = messages(settings, run_id)
    result: dict[str, Any] = {"timestamp": stamp, "machine": infra.machine()}
    try:
        if not no_relay:
            result["relay"] = (await stage_ceiling(settings, made[WARMUP:])).as_dict()
        result[stage] = await run(settings, made, LOGS / run_id, server_url)
    finally:
        await infra.delete_topics(bootstrap, settings.topic_prefix)
    if "relay" in result:
        result[stage]["relay_ratio"] = round(
            result[stage]["throughput_per_s"] / result["relay"]["throughput_per_s"], 4
        )
    return result


def cli(
    prog: str,
    doc: str,
    argv: list[str] | None,
    *,
    processes: str,
    measure_with: Callable[[argparse.Namespace], Coroutine[Any, Any, dict[str, Any]]],
) -> int:
    """`--count`, `--<processes>` and `--no-relay`; prints the result without the machine record."""
    p = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    p.add_argument("--count", type=int, default=50_000)
    p.add_argument(f"--{processes}", type=int, default=1)
    p.add_argument("--no-relay", action="store_true")
    result: dict[str, Any] = asyncio.run(measure_with(p.parse_args(argv)))
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))  # noqa: T201
    return 0
