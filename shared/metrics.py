"""Prometheus metrics of the pipeline, and the small HTTP endpoint that serves them from a stage.

The metrics live in prometheus-client's default registry, one per process, served on `MR_METRICS_PORT`
by every service: a separate ingest, classifier or router process with `/healthz` and `/readyz` for the
probes; the API (services/api/metrics.py) with its queue gauges, and there only `/metrics`. The stages
of the embedded runner share the registry with its API, whose metrics port then shows them all.

Names follow Prometheus conventions (`mr_` prefix, `_total` for counters, seconds for durations).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Protocol, runtime_checkable

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger(__name__)

MESSAGES_IN = Counter(
    "mr_messages_in_total",
    "Messages a stage took in: records consumed (classifier, router), feed entries parsed (ingest).",
    ["stage"],
)
MESSAGES_OUT = Counter(
    "mr_messages_out_total",
    "Messages a stage produced and had acknowledged, dead letters excluded.",
    ["stage"],
)
DEAD_LETTERS = Counter("mr_dead_letters_total", "Messages a stage sent to the dead-letter topic.", ["stage"])
ERRORS = Counter(
    "mr_errors_total",
    "Failures by kind: transient (a batch retried after an outage), commit_failed (a rebalance), "
    "source (a feed that could not be fetched or parsed), unexpected.",
    ["stage", "kind"],
)
BATCH_SECONDS = Histogram(
    "mr_batch_duration_seconds",
    "Time to process one batch, from the handler's start to the committed offsets.",
    ["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
BATCH_RECORDS = Histogram(
    "mr_batch_records",
    "Records per processed batch.",
    ["stage"],
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500),
)
CONSUMER_LAG = Gauge(
    "mr_consumer_lag",
    "Records between the consumer's position and the partition's high watermark, per assigned partition.",
    ["stage", "topic", "partition"],
)

# The label sets a stage last reported lag for, so that partitions moved away by a rebalance stop
# being reported instead of freezing at their last value.
_lag_labels: dict[str, set[tuple[str, str]]] = {}
_lag_checked_at: dict[str, float] = {}
LAG_INTERVAL_S = 1.0


@runtime_checkable
class ReportsLag(Protocol):
    """A consumer that can tell its lag per (topic, partition); the Kafka consumer can."""

    async def lag(self) -> dict[tuple[str, int], int]: ...


async def observe_lag(stage: str, consumer: object, *, force: bool = False) -> None:
    """Update `mr_consumer_lag` for `stage`, at most once a second. Never raises: metrics must not
    stop the pipeline."""
    if not isinstance(consumer, ReportsLag):
        return
    now = time.monotonic()
    if not force and now - _lag_checked_at.get(stage, 0.0) < LAG_INTERVAL_S:
        return
    _lag_checked_at[stage] = now
    try:
        async with asyncio.timeout(1.0):
            lags = await consumer.lag()
    except Exception as exc:  # noqa: BLE001 - lag is informational; the next poll tries again
        log.debug("%s: could not read the consumer lag: %s", stage, exc)
        return
    current = {(topic, str(partition)) for topic, partition in lags}
    for topic, label in _lag_labels.get(stage, set()) - current:
        with contextlib.suppress(KeyError):
            CONSUMER_LAG.remove(stage, topic, label)
    for (topic, partition), lag in lags.items():
        CONSUMER_LAG.labels(stage, topic, str(partition)).set(lag)
    _lag_labels[stage] = current


def exposition() -> bytes:
    """Every metric of this process in the Prometheus text format."""
    return generate_latest(REGISTRY)


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class MetricsServer:
    """`/metrics`, `/healthz` and `/readyz` on a port of their own, for a stage without an HTTP API.

    It runs on the stage's event loop, so a `/healthz` answer also proves the loop is not stuck.
    `collect` makes the `/metrics` body (default: this process's registry); with `probes=False` only
    `/metrics` is served (the API, whose probes check more than this port could tell).
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        ready: Callable[[], bool],
        collect: Callable[[], bytes] = exposition,
        probes: bool = True,
    ) -> None:
        self._host = host
        self._port = port
        self._ready = ready
        self._collect = collect
        self._probes = probes
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when constructed with port 0 in tests)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self._host, self._port)
        log.info("metrics on http://%s:%d/metrics", self._host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            server.close()
            await server.wait_closed()

    async def __aenter__(self) -> MetricsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request_line = await reader.readline()
                # Headers are read and ignored; a request body is never expected.
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
            parts = request_line.decode("latin-1").split()
            method, path = (parts[0], parts[1].split("?", 1)[0]) if len(parts) >= 2 else ("", "")
            status, content_type, body = self._respond(method, path)
            head = [
                f"HTTP/1.1 {status} {_REASONS[status]}",
                f"Content-Type: {content_type}",
                f"Content-Length: {len(body)}",
                "Connection: close",
            ]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            if method != "HEAD":
                writer.write(body)
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _respond(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method not in ("GET", "HEAD"):
            return 405, "text/plain; charset=utf-8", b"method not allowed\n"
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, self._collect()
        if not self._probes:
            return 404, "text/plain; charset=utf-8", b"not found\n"
        if path == "/healthz":
            return 200, "application/json", b'{"status":"ok"}'
        if path == "/readyz":
            if self._ready():
                return 200, "application/json", b'{"status":"ok"}'
            return 503, "application/json", b'{"status":"unavailable"}'
        return 404, "text/plain; charset=utf-8", b"not found\n"


def count_in(stage: str, n: int) -> None:
    if n:
        MESSAGES_IN.labels(stage).inc(n)


def count_out(stage: str, n: int) -> None:
    if n:
        MESSAGES_OUT.labels(stage).inc(n)


def count_error(stage: str, kind: str) -> None:
    ERRORS.labels(stage, kind).inc()


def observe_batch(stage: str, *, seconds: float, records: int, out: int, dead: int) -> None:
    """One processed batch: its duration and size, what came in and went out."""
    BATCH_SECONDS.labels(stage).observe(seconds)
    BATCH_RECORDS.labels(stage).observe(records)
    count_in(stage, records)
    count_out(stage, out)
    if dead:
        DEAD_LETTERS.labels(stage).inc(dead)


def initialise(stages: Iterable[str]) -> None:
    """Create the series of `stages` at zero, so that rate() sees the first increment."""
    for stage in stages:
        MESSAGES_IN.labels(stage)
        MESSAGES_OUT.labels(stage)
        DEAD_LETTERS.labels(stage)
        BATCH_SECONDS.labels(stage)
        BATCH_RECORDS.labels(stage)
