"""`python -m bench.api_bench`: the REST API on a million mentions, under an open-loop load.

1. A fresh PostgreSQL database (or `--reuse NAME`, see below), migrated, filled by bench/api_data.py with
   N mentions as the router stores them (COPY), then vacuumed and analysed.
2. The API as deployed: `python -m services.api` in its own process, keys switched on
   (MR_API_BOOTSTRAP_KEY = a generated admin key; a `write:support` key made in the database for the
   department-scoped requests), the per-key rate limit off (MR_API_RATE_LIMIT_PER_S=0).
3. The load, over loopback by vegeta (a native load generator in its own process, built once by
   deploy/local/vegeta.sh; `--loader python` sends it from this process with httpx instead): an open-loop
   schedule at a fixed rate. Request i is due at t0 + (i+1)/rate and is sent when due whatever happened
   before (at most --concurrency in flight: a due request waits in order for a free connection), and its
   latency runs from that scheduled time to the end of the response, so a stall delays every later
   figure instead of hiding them (no coordinated omission). The mix: mention lists (first pages, pages
   2-10 by the cursors the API handed out, deep pages anywhere in the 90 days, with department, status,
   priority, overdue, topic, sentiment and full-text filters, with the admin key and the scoped key),
   queue statistics, and mention details by id. After a warm-up, the mix runs for `--seconds`, then each
   class alone at the same rate (skipped with --quick or --no-alone).
4. The API's peak RSS (VmHWM and sampled VmRSS); CPU per phase of the API, its database backends, the
   load generator (vegeta's process) and this process.
5. EXPLAIN (ANALYZE, BUFFERS) of the SQL the API sends for a list (newest first, with and without a
   department, a status, a topic and a full-text filter, a deep page), for the queue statistics and for a
   detail: the route functions of services/api/mentions.py and queues.py are called in this process on an
   engine that records every statement with its parameters, and each statement is explained as recorded.

Targets (issue 6): at 200 requests/s, list p99 < 50 ms, queue statistics p99 < 100 ms, detail p99 < 20 ms;
API RSS < 250 MB. Results: bench/results/api-<timestamp>.json, a table on stdout.

    python -m bench.api_bench [--mentions 1000000] [--rate 200] [--seconds 30] [--quick] [--reuse NAME]
                              [--loader vegeta|python]

--quick: 20,000 mentions, 5 s of mix, no per-class phases: a check that the bench and the API hold
together (no timing judged). --reuse NAME keeps the generated database NAME and uses it again on the
next run with the same --mentions (generating a million takes several minutes); without it every run
generates a fresh database and drops it at the end. A reused database ages: its newest mention is as
old as the generation, so fewer assignments are open and more are overdue than right after it.

The parts: bench/api_data.py (the database), bench/api_workload.py (what is asked), bench/api_load.py (how
it is sent, and what it cost), bench/api_plans.py (the query plans); this module runs them and reports.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import json
import os
import secrets
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import make_url

from bench import api_data, infra
from bench.api_load import CpuTracker, Vegeta, closed_loop, install_vegeta, open_loop
from bench.api_plans import plan_table, plans
from bench.api_report import TARGET_RATE, phase_result, table, targets
from bench.api_workload import (
    LIST_TEMPLATES,
    MIX,
    PAGES,
    QUEUE_TEMPLATES,
    SCOPED_DEPARTMENT,
    Catalog,
    Request,
    workload,
)
from bench.pipeline import BenchFailure, RssSampler
from devsupport.processes import ServiceProcesses, free_port
from shared.db import migrate
from shared.settings import REPO_ROOT

RESULTS = REPO_ROOT / "bench" / "results"
LOGS = REPO_ROOT / "var" / "bench"


# --- The run --------------------------------------------------------------------------------------------


def _say(message: str) -> None:
    sys.stderr.write(f"[api-bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


async def _database(server_url: str, args: argparse.Namespace) -> tuple[str, str, dict[str, Any], bool]:
    """(name, url, generation figures, reused): a fresh database, or the --reuse one if it holds a
    finished generation of the same size."""
    if args.reuse:
        name = args.reuse
        conn = await api_data.connect(server_url)
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            comment = await conn.fetchval(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1", name
            )
        finally:
            await conn.close()
        url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
        meta = json.loads(comment) if comment else None
        if exists and meta and meta.get("mentions") == args.mentions:
            await migrate(url)
            return name, url, meta, True
        if exists:
            await infra.drop_database(server_url, name)
    else:
        name = f"mr_bench_api_{datetime.now(UTC).strftime('%Y%m%d%H%M%S')}_{secrets.token_hex(2)}"
    url = await infra.create_database(server_url, name)
    await migrate(url)
    figures = await api_data.load(url, mentions=args.mentions, progress=_say)
    if args.reuse:
        conn = await api_data.connect(server_url)
        try:
            comment = json.dumps(figures).replace("'", "''")
            await conn.execute(f"COMMENT ON DATABASE \"{name}\" IS '{comment}'")
        finally:
            await conn.close()
    return name, url, figures, False


async def _catalog(db_url: str, *, seed: int) -> Catalog:
    """Ids to look up (70 % from the last 7 days, as people open what they just saw in a list) and deep-page
    positions anywhere in the range, from the database; the cursors come later (`_walk`)."""
    conn = await api_data.connect(db_url)
    try:
        recent = await conn.fetch(
            "SELECT id FROM mentions "
            "WHERE routed_at > (SELECT max(routed_at) FROM mentions) - interval '7 days' "
            "ORDER BY md5(id || $1) LIMIT 3000",
            str(seed),
        )
        anywhere = await conn.fetch(
            "SELECT id, routed_at FROM mentions TABLESAMPLE SYSTEM (1) REPEATABLE ($1) LIMIT 3000", seed
        )
        scoped = await conn.fetch(
            "SELECT mention_id FROM assignments TABLESAMPLE SYSTEM (2) REPEATABLE ($1) "
            "WHERE department = $2 LIMIT 3000",
            seed,
            SCOPED_DEPARTMENT,
        )
    finally:
        await conn.close()
    return Catalog(
        cursors={},
        deep=[(r["routed_at"], r["id"]) for r in anywhere],
        admin_ids=[r["id"] for r in recent] + [r["id"] for r in anywhere][: max(1, len(recent) * 3 // 7)],
        scoped_ids=[r["mention_id"] for r in scoped],
    )


async def _walk(catalog: Catalog, client: httpx.AsyncClient, headers: dict[str, dict[str, str]]) -> None:
    """Pages 2-10 of every list, by following the cursors the API hands out."""
    for name, key, params, _ in LIST_TEMPLATES:
        cursor: str | None = None
        found: list[str] = []
        for _page in range(10):
            query = {**params, **({"cursor": cursor} if cursor else {})}
            response = await client.get("/v1/mentions", params=query, headers=headers[key])
            if response.status_code != 200:
                raise BenchFailure(f"GET /v1/mentions {query}: {response.status_code} {response.text[:300]}")
            cursor = response.json()["next_cursor"]
            if cursor is None:
                break
            found.append(cursor)
        catalog.cursors[name] = found


async def _wait_ready(client: httpx.AsyncClient, services: ServiceProcesses, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while True:
        services.check_alive()
        with contextlib.suppress(httpx.HTTPError):
            # /healthz, not /readyz: that one also asks the broker, which the reads measured here never use.
            if (await client.get("/healthz")).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise BenchFailure(f"the API did not answer /healthz within {within:.0f}s")
        await asyncio.sleep(0.2)


async def _scoped_key(db_url: str) -> str:
    from shared.apikeys import create_key
    from shared.db import create_engine, session_factory

    engine = create_engine(db_url)
    try:
        async with session_factory(engine)() as session:
            made = await create_key(
                session, name="bench-support-tool", scopes=[f"write:{SCOPED_DEPARTMENT}"], created_by="bench"
            )
            await session.commit()
            return made.key
    finally:
        await engine.dispose()


def _server_url() -> str:
    """The PostgreSQL server: MR_DATABASE_URL when it names one, else deploy/local/postgres.sh's (as
    `make test` does). The API bench needs no broker and never starts one."""
    url = os.environ.get("MR_DATABASE_URL", "")
    return url if url.startswith("postgresql") else infra.script_env("postgres.sh")["MR_DATABASE_URL"]


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    server_url = _server_url()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    mode = "quick" if args.quick else "full" if _is_full(args) else "custom"
    result: dict[str, Any] = {
        "timestamp": stamp,
        "mode": mode,
        "label": args.label,
        "api_checkout": str(args.api_checkout) if args.api_checkout else None,
        "command": " ".join(["python -m bench.api_bench", *sys.argv[1:]]),
        "machine": {**infra.machine(), "postgres": await infra.postgres_version(server_url)},
        "parameters": {
            "mentions": args.mentions,
            "rate_per_s": args.rate,
            "seconds": args.seconds,
            "warmup_s": args.warmup,
            "mix": MIX,
            "list_pages": PAGES,
            "list_templates": [
                {"name": n, "key": k, "params": p, "weight": w} for n, k, p, w in LIST_TEMPLATES
            ],
            "queue_templates": [
                {"name": n, "key": k, "params": p, "weight": w} for n, k, p, w in QUEUE_TEMPLATES
            ],
            "scoped_key": f"write:{SCOPED_DEPARTMENT}",
            "concurrency": args.concurrency,
            "workers": args.workers,
            "loader": args.loader_info,
        },
    }
    name, db_url, data, reused = await _database(server_url, args)
    result["data"] = {**data, "reused": reused, "database": name if args.reuse else None}
    if not reused:
        _say(
            f"data: {data['mentions']:,} mentions in {data['seconds']['total_s']:.0f}s, "
            f"database {data['database_mb']:,.0f} MB"
        )
    if args.plans_only:
        result["plans"] = await plans(db_url, await _catalog(db_url, seed=args.seed))
        return result
    logs = LOGS / f"api-{stamp}"
    logs.mkdir(parents=True, exist_ok=True)
    result["logs"] = str(logs.relative_to(REPO_ROOT))
    try:
        await _measure(args, result, db_url, name, logs)
    finally:
        if not args.reuse:
            await infra.drop_database(server_url, name)
    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["targets"] = targets(result)
    return result


def _is_full(args: argparse.Namespace) -> bool:
    return (
        args.mentions == 1_000_000 and args.rate == TARGET_RATE and args.seconds >= 30 and not args.no_alone
    )


async def _measure(
    args: argparse.Namespace, result: dict[str, Any], db_url: str, name: str, logs: Path
) -> None:
    admin_key = f"mr_{secrets.token_hex(4)}_{secrets.token_urlsafe(32)}"
    scoped_key = await _scoped_key(db_url)
    headers = {
        "admin": {"Authorization": f"Bearer {admin_key}"},
        "scoped": {"Authorization": f"Bearer {scoped_key}"},
    }
    port = free_port()
    env = {
        **os.environ,
        "MR_DATABASE_URL": db_url,
        "MR_API_HOST": "127.0.0.1",
        "MR_API_PORT": str(port),
        "MR_API_AUTH": "true",
        "MR_API_BOOTSTRAP_KEY": admin_key,
        "MR_API_RATE_LIMIT_PER_S": "0",
        "MR_TOPIC_PREFIX": f"apibench{secrets.token_hex(3)}.",
        "PYTHONUNBUFFERED": "1",
    }
    services = ServiceProcesses(env, logs, failure=BenchFailure, root=args.api_checkout or REPO_ROOT)
    services.start("api", "api")
    # Idle connections are dropped before uvicorn's keep-alive timeout (5 s) closes them under a request.
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency, keepalive_expiry=2.0
    )
    codes: dict[str, int | None] = {}
    base_url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=httpx.Timeout(60.0)) as client:
            await _wait_ready(client, services)
            _say("catalog: ids, deep positions, and pages 2-10 of every list through the API")
            catalog = await _catalog(db_url, seed=args.seed)
            await _walk(catalog, client, headers)
            api_pid = services.pids()["api"]
            sampler = RssSampler({"api": api_pid})
            sampling = asyncio.Event()
            sampler_task = asyncio.create_task(sampler.run(sampling))
            gc.collect()
            gc.freeze()
            with tempfile.TemporaryDirectory(prefix="mr-api-bench-") as workdir:  # targets carry the keys
                tool = None
                if args.loader == "vegeta":
                    tool = Vegeta(
                        args.loader_info["path"],
                        base_url=base_url,
                        headers=headers,
                        workdir=Path(workdir),
                        concurrency=args.concurrency,
                    )
                cpu = CpuTracker(api_pid, name)
                phases = await _phases(args, client, tool, catalog, headers, services, cpu)
            sampling.set()
            await sampler_task
            result["rss_mb"] = sampler.result()["api"]
            result["phases"] = phases
    finally:
        codes = services.stop(timeout=20.0)
    result["exit_codes"] = codes
    _say("EXPLAIN (ANALYZE, BUFFERS) of the list, queue and detail statements")
    result["plans"] = await plans(db_url, catalog)


async def _phases(
    args: argparse.Namespace,
    client: httpx.AsyncClient,
    tool: Vegeta | None,
    catalog: Catalog,
    headers: dict[str, dict[str, str]],
    services: ServiceProcesses,
    cpu: CpuTracker,
) -> dict[str, Any]:
    """Warm-up; the capacity (closed loop); the mix at the target rate; if that is more than the API
    sustains, the mix at 70 % of its capacity too; then each class alone at the target rate."""
    phases: dict[str, Any] = {}
    seed = args.seed

    async def measure(
        name: str, classes: dict[str, float], rate: float | None, seconds: float, *, revalidate: bool = False
    ) -> None:
        nonlocal seed
        seed += 1
        tracking = asyncio.Event()
        if rate is None:  # closed loop
            n = int(seconds * 2_000)
            # Revalidations repeat a few hundred URLs (each needs its ETag fetched first).
            requests = workload(500 if revalidate else n, catalog, classes=classes, seed=seed)
            requests = (requests * (n // len(requests) + 1))[:n]
            _say(f"{name}: {args.workers} clients back to back for {seconds:g} s")
        else:
            requests = workload(max(1, int(rate * seconds)), catalog, classes=classes, seed=seed)
            _say(f"{name}: {len(requests):,} requests at {rate:g}/s")
        if revalidate:
            requests = await _with_etags(client, requests, headers)
        attack = tool.prepare(requests, rate=rate, seconds=seconds, workers=args.workers) if tool else None
        cpu.start()
        tracker = asyncio.create_task(cpu.run(tracking))
        try:
            if tool is not None and attack is not None:
                await tool.run(attack)
            elif rate is None:
                samples, timing = await closed_loop(
                    client, requests, seconds=seconds, workers=args.workers, headers=headers
                )
            else:
                samples, timing = await open_loop(
                    client, requests, rate=rate, headers=headers, concurrency=args.concurrency
                )
        finally:
            tracking.set()
            await tracker
        used = cpu.stop()
        if tool is not None and attack is not None:
            samples, timing = await tool.results(attack)
        services.check_alive()
        if name == "warmup":
            return
        phase = phase_result(samples, timing, used, rate)
        phases[name] = phase

    await measure("warmup", MIX, None, args.warmup)
    if not args.quick:
        await measure("capacity", MIX, None, args.seconds)
    await measure("mix", MIX, args.rate, args.seconds)
    capacity = phases.get("capacity", {}).get("achieved_per_s")
    if capacity is not None and capacity < args.rate:
        sustainable = float(max(10, int(capacity * 0.7 / 10) * 10))
        await measure(f"mix at {sustainable:g}/s", MIX, sustainable, args.seconds)
    if not args.no_alone and not args.quick:
        for cls in ("list", "queues", "detail"):
            await measure(f"{cls} alone", {cls: 1.0}, args.rate, args.seconds)
        # Tools polling with the ETag they were given (If-None-Match): what a revalidation costs.
        for cls in ("detail", "list", "queues"):
            await measure(f"{cls} revalidated", {cls: 1.0}, args.rate, args.seconds, revalidate=True)
        # The same under full load, where a 200/s trickle's per-request wake-ups are shared: what a
        # revalidation costs the API when it is busy.
        both = {"detail": 0.5, "queues": 0.5}
        await measure("detail and queues revalidated, full load", both, None, args.seconds, revalidate=True)
    return phases


async def _with_etags(
    client: httpx.AsyncClient, requests: list[Request], headers: dict[str, dict[str, str]]
) -> list[Request]:
    """`requests` as revalidations: each with the ETag the API gave for its URL and key just before."""
    tags: dict[tuple[str, str, tuple[tuple[str, str], ...]], str] = {}
    for r in requests:
        at = (r.key, r.path, r.params)
        if at not in tags:
            tags[at] = (await client.get(r.path, params=r.params, headers=r.headers(headers))).headers["etag"]
    return [dataclasses.replace(r, if_none_match=tags[(r.key, r.path, r.params)]) for r in requests]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.api_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--mentions", type=int, help="mentions in the database (1,000,000; quick 20,000)")
    p.add_argument("--rate", type=float, default=TARGET_RATE, help="offered load, requests/s (200)")
    p.add_argument("--seconds", type=float, help="length of each measured phase (30; quick 5)")
    p.add_argument("--warmup", type=float, help="warm-up at the same rate, not measured (10; quick 2)")
    p.add_argument("--quick", action="store_true", help="20,000 mentions, 5 s, mix only; judges no timing")
    p.add_argument("--no-alone", action="store_true", help="skip the per-class phases")
    p.add_argument("--reuse", metavar="NAME", help="keep the generated database NAME and reuse it next time")
    p.add_argument(
        "--loader",
        choices=("vegeta", "python"),
        default="vegeta",
        help="what sends the load: vegeta, a native process (default), or this process's httpx loop",
    )
    p.add_argument("--concurrency", type=int, default=64, help="requests in flight at most (connections), 64")
    p.add_argument("--workers", type=int, default=16, help="clients of the closed-loop capacity phase (16)")
    p.add_argument("--plans-only", action="store_true", help="only EXPLAIN the statements (with --reuse)")
    p.add_argument(
        "--api-checkout",
        type=Path,
        metavar="DIR",
        help="run the API of another checkout (e.g. a git worktree of an older commit): before/after figures",
    )
    p.add_argument("--seed", type=int, default=6)
    p.add_argument("--label", default="", help="a note stored in the results")
    p.add_argument("--out", type=Path, help="results file (default bench/results/api-<timestamp>.json)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.mentions = args.mentions or (20_000 if args.quick else 1_000_000)
    args.seconds = args.seconds or (5.0 if args.quick else 30.0)
    args.warmup = args.warmup if args.warmup is not None else (2.0 if args.quick else 10.0)
    if args.plans_only and not args.reuse:
        raise SystemExit("--plans-only needs --reuse NAME (a generated database)")
    started = time.monotonic()
    try:
        args.loader_info = {"tool": "python httpx", "version": httpx.__version__}
        if args.loader == "vegeta" and not args.plans_only:  # before the data: a missing tool fails fast
            exe, version = install_vegeta()
            args.loader_info = {"tool": "vegeta", "version": version, "path": exe}
        result = asyncio.run(_run(args))
    except BenchFailure as exc:
        _say(f"FAILED: {exc}")
        return 1
    if args.plans_only:
        sys.stdout.write(plan_table(result["plans"]))
        return 0
    result["runtime_s"] = round(time.monotonic() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "" if result["mode"] == "full" else f"-{result['mode']}"
    out = args.out or RESULTS / f"api-{result['timestamp']}{suffix}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    sys.stdout.write(table(result))
    sys.stdout.write(f"  ({result['runtime_s']:.0f} s; results in {out})\n")
    bad = [
        e for p in result["phases"].values() for s in p["classes"].values() for e in [s.get("errors", 0)] if e
    ]
    if bad or any(code != 0 for code in result["exit_codes"].values()):
        _say(f"FAILED: {sum(bad)} requests failed or the API did not stop cleanly: {result['exit_codes']}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
