"""The API bench's load: the open-loop schedule and the closed loop that sends the requests, the CPU of
the API and its database backends while they run, and the statistics of the answers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import infra
from bench.api_workload import Request
from bench.pipeline import _percentile


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
                response = await client.get(req.path, params=req.params, headers=headers[req.key])
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
                response = await client.get(req.path, params=req.params, headers=headers[req.key])
                status = response.status_code
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            samples.append(Sample(req, (time.perf_counter() - sent) * 1000, status, error, sent - started))

    await asyncio.gather(*(worker() for _ in range(workers)))
    elapsed = time.perf_counter() - started
    return samples, {"finished_s": round(elapsed, 2), "achieved_per_s": round(len(samples) / elapsed, 1)}


class CpuTracker:
    """CPU seconds of the API process, of this database's PostgreSQL backends and of this process over a
    phase. Backends come and go with the API's connection pool (its overflow connections close when
    returned): each is found by its process title (`postgres: <user> <database> …`) every half second
    and counted up to its last sample."""

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
        self._start = {"api": infra.cpu_seconds(self.api_pid), "bench": infra.cpu_seconds(os.getpid())}
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
            "api": round(infra.cpu_seconds(self.api_pid) - self._start["api"], 2),
            "postgres": round(sum(self._last[p] - self._first.get(p, 0.0) for p in self._last), 2),
            "bench": round(infra.cpu_seconds(os.getpid()) - self._start["bench"], 2),
        }
        machine_busy = busy - self._busy[0]
        return {
            "cpu_s": used,
            "machine_busy_cpu_s": round(machine_busy, 2),
            "machine_capacity_cpu_s": round(total - self._busy[1], 2),
            "other_cpu_s": round(max(0.0, machine_busy - sum(used.values())), 2),
        }


def summarise(samples: Sequence[Sample]) -> dict[str, Any]:
    def group(key: Callable[[Sample], str]) -> dict[str, Any]:
        by: dict[str, list[Sample]] = {}
        for s in samples:
            by.setdefault(key(s), []).append(s)
        return {
            name: summary([s.latency_ms for s in group], errors=sum(1 for s in group if s.status != 200))
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
