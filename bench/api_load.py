"""The API bench's load: the open-loop schedule and the closed loop that send the requests — by vegeta, a
native load generator in its own process (the default), or by this process's httpx loop
(`--loader python`) — the CPU of the API, its database backends and the load generator while they run,
and the statistics of the answers."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import heapq
import json
import os
import re
import resource
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from bench import infra
from bench.api_workload import Request
from bench.pipeline import BenchFailure, _percentile
from shared.settings import REPO_ROOT

VEGETA_SCRIPT = REPO_ROOT / "deploy" / "local" / "vegeta.sh"


# Answers that are not errors: 304 is the answer to a revalidation whose copy is current.
OK = (200, 304)


def due_times(n: int, rate: float, t0: float = 0.0) -> list[float]:
    """The open-loop schedule: request i is due at t0 + i / rate, whatever happened before it."""
    return [t0 + i / rate for i in range(n)]


def summary(latencies_ms: Sequence[float], errors: int = 0) -> dict[str, Any]:
    """Count, errors and nearest-rank percentiles of one class's latencies (ms, from the due time)."""
    if not latencies_ms:
        return {"count": 0, "errors": errors}
    return {
        "count": len(latencies_ms),
        "errors": errors,
        "p50": round(_percentile(latencies_ms, 50), 1),
        "p90": round(_percentile(latencies_ms, 90), 1),
        "p99": round(_percentile(latencies_ms, 99), 1),
        "max": round(max(latencies_ms), 1),
        "mean": round(sum(latencies_ms) / len(latencies_ms), 1),
    }


@dataclass
class Sample:
    request: Request
    latency_ms: float
    status: int  # 0: no response (connection error, timeout)
    error: str = ""
    at_s: float = 0.0  # when it was due (open loop) or sent (closed loop), from the phase's start


async def open_loop(
    client: httpx.AsyncClient,
    requests: Sequence[Request],
    *,
    rate: float,
    headers: dict[str, dict[str, str]],
    concurrency: int,
) -> tuple[list[Sample], dict[str, float]]:
    """Send `requests` on the open-loop schedule; every latency counts from the request's due time.

    At most `concurrency` requests are in flight; the others wait their turn here, in order, and the wait
    counts in their latency. (httpcore's pool looks through every waiting request for every connection
    event: with thousands waiting in it, the load generator would become the bottleneck.)"""
    samples: list[Sample] = []
    behind = 0.0
    slots = asyncio.Semaphore(concurrency)

    async def one(req: Request, due: float) -> None:
        status, error = 0, ""
        try:
            async with slots:
                response = await client.get(req.path, params=req.params, headers=req.headers(headers))
            status = response.status_code
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        samples.append(Sample(req, (time.perf_counter() - due) * 1000, status, error, due - t0))

    tasks: list[asyncio.Task[None]] = []
    t0 = time.perf_counter() + 0.05
    for req, due in zip(requests, due_times(len(requests), rate, t0), strict=True):
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            behind = max(behind, -delay)
        tasks.append(asyncio.create_task(one(req, due)))
    sent = time.perf_counter()
    await asyncio.gather(*tasks)
    return samples, {
        "send_schedule_s": round(sent - t0, 2),
        "sender_max_behind_ms": round(behind * 1000, 1),
        "finished_s": round(time.perf_counter() - t0, 2),
    }


async def closed_loop(
    client: httpx.AsyncClient,
    requests: Sequence[Request],
    *,
    seconds: float,
    workers: int,
    headers: dict[str, dict[str, str]],
) -> tuple[list[Sample], dict[str, float]]:
    """`workers` clients each sending the next request as soon as their previous one is answered, for
    `seconds`: the throughput the API sustains. The latencies here are service times under saturation
    (each counts from its own send), not the open-loop latencies of the other phases."""
    samples: list[Sample] = []
    queue = iter(requests)
    started = time.perf_counter()
    deadline = started + seconds

    async def worker() -> None:
        for req in queue:
            if time.perf_counter() >= deadline:
                return
            sent = time.perf_counter()
            status, error = 0, ""
            try:
                response = await client.get(req.path, params=req.params, headers=req.headers(headers))
                status = response.status_code
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            samples.append(Sample(req, (time.perf_counter() - sent) * 1000, status, error, sent - started))

    await asyncio.gather(*(worker() for _ in range(workers)))
    elapsed = time.perf_counter() - started
    return samples, {"finished_s": round(elapsed, 2), "achieved_per_s": round(len(samples) / elapsed, 1)}


# --- vegeta: the native load generator ------------------------------------------------------------------


def install_vegeta() -> tuple[str, str]:
    """(executable, version): deploy/local/vegeta.sh builds the pinned release once (idempotent)."""
    try:
        subprocess.run([str(VEGETA_SCRIPT), "install"], check=True, timeout=900)
        exe = subprocess.run(
            [str(VEGETA_SCRIPT), "path"], check=True, capture_output=True, text=True, timeout=30
        ).stdout.strip()
        out = subprocess.run([exe, "-version"], check=True, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise BenchFailure(f"no vegeta ({exc}); see deploy/local/vegeta.sh, or use --loader python") from exc
    version = next(
        (line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Version:")), ""
    )
    return exe, version or "unknown"


def vegeta_rate(rate: float) -> tuple[str, int]:
    """vegeta's `-rate` for `rate` requests/s, and its interval in ns: vegeta paces hit i at
    began + (i + 1) * interval, with interval = per // freq in whole nanoseconds."""
    if not rate > 0:
        raise ValueError(f"an open-loop rate must be positive, not {rate}")
    freq, per_s = (int(rate), 1) if float(rate).is_integer() else (round(rate * 1000), 1000)
    return f"{freq}/{per_s}s", per_s * 1_000_000_000 // freq


def vegeta_targets(
    requests: Sequence[Request], base_url: str, headers: dict[str, dict[str, str]]
) -> Iterator[str]:
    """vegeta's JSON targets, one a line, each with its key's headers. The URL's fragment is the
    request's position: vegeta reports each result's URL, the fragment is never sent, and so every answer
    finds its request (class, template) whatever order the workers took them in."""
    for i, req in enumerate(requests):
        query = urlencode(req.params, quote_via=quote)
        url = f"{base_url}{req.path}{'?' if query else ''}{query}#{i}"
        header = {name: [value] for name, value in req.headers(headers).items()}
        yield json.dumps({"method": "GET", "url": url, "header": header}, separators=(",", ":"))


@dataclass(frozen=True)
class Hit:
    """One of vegeta's results (`vegeta encode --to csv`); times in ns on the same clock."""

    seq: int  # vegeta's hit number: its tick on the schedule
    index: int  # the request's position (the URL's fragment)
    sent_ns: int
    latency_ns: int  # from the send to the end of the response body
    status: int  # 0: no response (connection error, timeout)
    error: str

    @property
    def end_ns(self) -> int:
        return self.sent_ns + self.latency_ns


def read_vegeta_csv(lines: Iterable[str]) -> list[Hit]:
    """Parse `vegeta encode --to csv` (timestamp ns, code, latency ns, bytes out, bytes in, error, body,
    attack, seq, method, url, headers). Rows without a URL are ticks that came after the targets ran
    out ("no targets to attack": vegeta stops there; nothing was sent)."""
    hits: list[Hit] = []
    for row in csv.reader(lines):
        if not row:
            continue
        if len(row) != 12:
            raise ValueError(f"a vegeta CSV result has 12 fields, not {len(row)}: {row[:6]}")
        url = row[10]
        if not url:
            continue
        _, sep, fragment = url.rpartition("#")
        if not sep or not fragment.isdigit():
            raise ValueError(f"a vegeta result's URL does not end in #<request index>: {url}")
        hits.append(Hit(int(row[8]), int(fragment), int(row[0]), int(row[2]), int(row[1]), row[5]))
    return hits


def _schedule_start(hits: Sequence[Hit], interval_ns: int) -> int:
    """When vegeta's schedule began: hit i is due at began + (i + 1) * interval and never sent before it,
    so the earliest `sent - (i + 1) * interval` is the start (to within the first hit's own lag, µs)."""
    return min(h.sent_ns - (h.seq + 1) * interval_ns for h in hits)


def sender_lag_ns(hits: Sequence[Hit], due_ns: Callable[[Hit], int], workers: int) -> list[int]:
    """How late vegeta itself sent each hit (in `hits`' order by seq): the time from when the hit was
    both due and had a free worker until it was sent. With every one of the `workers` busy, a due hit
    waits in order for one to finish (that wait is the API's, and counts in the latency from the due
    time); a worker is free again once fewer than `workers` of the earlier hits are in flight, i.e. at
    the `workers`-th latest end among them."""
    ends: list[int] = []  # min-heap of the `workers` latest ends of the earlier hits
    lags: list[int] = []
    for h in hits:
        free = ends[0] if len(ends) >= workers else None
        ready = due_ns(h) if free is None else max(due_ns(h), free)
        lags.append(max(0, h.sent_ns - ready))
        if len(ends) < workers:
            heapq.heappush(ends, h.end_ns)
        elif h.end_ns > ends[0]:
            heapq.heapreplace(ends, h.end_ns)
    return lags


def _check_complete(hits: Sequence[Hit], requests: Sequence[Request], *, all_sent: bool) -> None:
    seen = [h.index for h in hits]
    if len(set(seen)) != len(seen) or any(not 0 <= i < len(requests) for i in seen):
        raise BenchFailure("vegeta answered a request twice or one that was not asked")
    if all_sent and len(seen) != len(requests):
        raise BenchFailure(f"vegeta sent {len(seen):,} of the {len(requests):,} requests of the schedule")


def vegeta_open_loop(
    hits: Sequence[Hit], requests: Sequence[Request], *, interval_ns: int, workers: int
) -> tuple[list[Sample], dict[str, float]]:
    """Samples of an open-loop attack, each latency from its due time on vegeta's schedule (not from the
    send, which is later when every worker was busy): a stall delays every later figure."""
    _check_complete(hits, requests, all_sent=True)
    if not hits:
        return [], {
            "send_schedule_s": 0.0,
            "sender_max_behind_ms": 0.0,
            "queued_max_ms": 0.0,
            "finished_s": 0.0,
        }
    ordered = sorted(hits, key=lambda h: h.seq)
    began = _schedule_start(ordered, interval_ns)
    first_due = began + interval_ns

    def due(h: Hit) -> int:
        return began + (h.seq + 1) * interval_ns

    samples = [
        Sample(requests[h.index], (h.end_ns - due(h)) / 1e6, h.status, h.error, (due(h) - first_due) / 1e9)
        for h in ordered
    ]
    lags = sender_lag_ns(ordered, due, workers)
    return samples, {
        "send_schedule_s": round((max(h.sent_ns for h in ordered) - first_due) / 1e9, 2),
        # vegeta's own lag behind its schedule (a hit due with a worker free but sent late) ...
        "sender_max_behind_ms": round(max(lags) / 1e6, 1),
        # ... and the longest a due hit waited, for a free worker included.
        "queued_max_ms": round(max(h.sent_ns - due(h) for h in ordered) / 1e6, 1),
        "finished_s": round((max(h.end_ns for h in ordered) - first_due) / 1e9, 2),
    }


def vegeta_closed_loop(
    hits: Sequence[Hit], requests: Sequence[Request]
) -> tuple[list[Sample], dict[str, float]]:
    """Samples of a closed-loop attack (`-rate=0`, `workers` back to back): service times from the send."""
    _check_complete(hits, requests, all_sent=False)
    if not hits:
        return [], {"finished_s": 0.0, "achieved_per_s": 0.0}
    ordered = sorted(hits, key=lambda h: h.seq)
    began = min(h.sent_ns for h in ordered)
    elapsed = (max(h.end_ns for h in ordered) - began) / 1e9
    samples = [
        Sample(requests[h.index], h.latency_ns / 1e6, h.status, h.error, (h.sent_ns - began) / 1e9)
        for h in ordered
    ]
    return samples, {"finished_s": round(elapsed, 2), "achieved_per_s": round(len(samples) / elapsed, 1)}


@dataclass(frozen=True)
class Attack:
    """One phase's attack: its targets (keys inside: the directory is the run's private one), vegeta's
    binary results, and the schedule to read them against."""

    name: str
    requests: Sequence[Request]
    argv: list[str]
    targets: Path
    results: Path
    interval_ns: int | None  # None: closed loop
    workers: int


class Vegeta:
    """Runs vegeta for the bench: open loop at a fixed rate with at most `concurrency` requests in flight
    (as many workers, each with its keep-alive connection; a due request waits in order for one, and the
    wait counts), or closed loop (`-rate=0`, `workers` back to back) for a number of seconds."""

    def __init__(
        self,
        exe: str,
        *,
        base_url: str,
        headers: dict[str, dict[str, str]],
        workdir: Path,
        concurrency: int,
        timeout_s: float = 60.0,
    ) -> None:
        self.exe = exe
        self.base_url = base_url
        self.headers = headers
        self.workdir = workdir
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self._made = 0

    def prepare(
        self, requests: Sequence[Request], *, rate: float | None, seconds: float, workers: int
    ) -> Attack:
        """Write the targets file (before the phase's clocks: it is not load) and the command line. Open
        loop: every request exactly once on the schedule (`-lazy` reads them in order and vegeta stops
        when they run out, so it never cuts a late schedule short as `-duration` would); closed loop: for
        `seconds`."""
        self._made += 1
        name = f"phase{self._made}"
        targets = self.workdir / f"{name}.targets.jsonl"
        results = self.workdir / f"{name}.results.bin"
        with targets.open("w") as out:
            for line in vegeta_targets(requests, self.base_url, self.headers):
                out.write(line + "\n")
        argv = [
            self.exe,
            "attack",
            "-format=json",
            "-lazy",
            f"-targets={targets}",
            f"-output={results}",
            "-max-body=0",  # read every body to its end, keep none of it
            f"-timeout={self.timeout_s:g}s",
        ]
        if rate is None:
            n, interval = workers, None
            argv += ["-rate=0", f"-duration={seconds:g}s"]
        else:
            n = self.concurrency
            spec, interval = vegeta_rate(rate)
            argv.append(f"-rate={spec}")
        argv += [f"-workers={n}", f"-max-workers={n}", f"-max-connections={n}"]
        return Attack(name, requests, argv, targets, results, interval, n)

    async def run(self, attack: Attack) -> None:
        """Run the attack to its end; vegeta is waited for here, so its CPU is in the phase's `loadgen`."""
        with (self.workdir / f"{attack.name}.stderr").open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                *attack.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
            )
            code = await proc.wait()
        if code != 0:
            tail = (self.workdir / f"{attack.name}.stderr").read_text(errors="replace")[-600:]
            raise BenchFailure(f"vegeta attack exited {code}: {tail}")

    async def results(self, attack: Attack) -> tuple[list[Sample], dict[str, float]]:
        """The phase's samples (after its clocks): `vegeta encode --to csv`, parsed; the files go."""
        encoded = attack.results.with_suffix(".csv")
        proc = await asyncio.create_subprocess_exec(
            self.exe,
            "encode",
            "-to=csv",
            f"-output={encoded}",
            str(attack.results),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise BenchFailure(
                f"vegeta encode exited {proc.returncode}: {err.decode(errors='replace')[-600:]}"
            )
        with encoded.open(newline="") as f:
            hits = read_vegeta_csv(f)
        for path in (attack.targets, attack.results, encoded):
            path.unlink(missing_ok=True)
        if attack.interval_ns is None:
            return vegeta_closed_loop(hits, attack.requests)
        return vegeta_open_loop(hits, attack.requests, interval_ns=attack.interval_ns, workers=attack.workers)


def children_cpu_seconds() -> float:
    """User + system CPU time of this process's children that have ended and been waited for: the load
    generator's, once its process has exited (its /proc entry is gone by then)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class CpuTracker:
    """CPU seconds over a phase of the API process, of this database's PostgreSQL backends, of the load
    generator (vegeta: a child process that runs for the phase and is waited for within it; 0 with
    `--loader python`, whose load is this process's) and of this process (`bench`). Backends come and go
    with the API's connection pool (its overflow connections close when returned): each is found by its
    process title (`postgres: <user> <database> …`) every half second and counted up to its last sample."""

    def __init__(self, api_pid: int, database: str) -> None:
        self.api_pid = api_pid
        self.marker = f" {database} "
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._start: dict[str, float] = {}
        self._busy = (0.0, 0.0)

    def _backends(self) -> dict[int, float]:
        backends: set[int] = set()
        workers: dict[int, int] = {}  # parallel worker -> its leader backend
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if (proc / "comm").read_text().strip() != "postgres":
                    continue
                title = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if self.marker in title:
                backends.add(int(proc.name))
            elif (leader := re.search(r"parallel worker for PID (\d+)", title)) is not None:
                workers[int(proc.name)] = int(leader.group(1))
        pids = backends | {w for w, leader in workers.items() if leader in backends}
        return {pid: infra.cpu_seconds(pid) for pid in pids}

    def sample(self) -> None:
        for pid, cpu in self._backends().items():
            self._first.setdefault(pid, 0.0)  # a backend that started during the phase
            self._last[pid] = cpu

    def start(self) -> None:
        now = self._backends()
        self._first, self._last = dict(now), dict(now)
        self._start = {
            "api": infra.cpu_seconds(self.api_pid),
            "loadgen": children_cpu_seconds(),
            "bench": infra.cpu_seconds(os.getpid()),
        }
        self._busy = infra.machine_busy_seconds()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    def stop(self) -> dict[str, Any]:
        self.sample()
        busy, total = infra.machine_busy_seconds()
        used = {
            "api": round(infra.cpu_seconds(self.api_pid) - self._start["api"], 3),
            "postgres": round(sum(self._last[p] - self._first.get(p, 0.0) for p in self._last), 3),
            "loadgen": round(children_cpu_seconds() - self._start["loadgen"], 3),
            "bench": round(infra.cpu_seconds(os.getpid()) - self._start["bench"], 3),
        }
        machine_busy = busy - self._busy[0]
        return {
            "cpu_s": used,
            "machine_busy_cpu_s": round(machine_busy, 3),
            "machine_capacity_cpu_s": round(total - self._busy[1], 3),
            "other_cpu_s": round(max(0.0, machine_busy - sum(used.values())), 3),
        }


def summarise(samples: Sequence[Sample]) -> dict[str, Any]:
    def group(key: Callable[[Sample], str]) -> dict[str, Any]:
        by: dict[str, list[Sample]] = {}
        for s in samples:
            by.setdefault(key(s), []).append(s)
        return {
            name: summary([s.latency_ms for s in group], errors=sum(1 for s in group if s.status not in OK))
            for name, group in sorted(by.items())
        }

    by_second: dict[int, list[float]] = {}
    for s in samples:
        by_second.setdefault(int(s.at_s), []).append(s.latency_ms)
    return {
        "classes": group(lambda s: s.request.cls),
        "kinds": group(lambda s: s.request.kind),
        "templates": group(lambda s: f"{s.request.cls}: {s.request.template}"),
        # Per second of the schedule: requests, p50, max. A stall shows as a ramp (open loop).
        "timeline": [
            [second, len(v), round(_percentile(v, 50), 1), round(max(v), 1)]
            for second, v in sorted(by_second.items())
        ],
    }
