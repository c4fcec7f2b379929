"""The API's Prometheus metrics, served on the metrics port (`MR_METRICS_PORT`), never on the public API.

The public port serves no `/metrics`: it needs no key there, so anyone who reached the API (or its
ingress) could read every department's queue sizes, and each scrape ran two GROUP BY queries over the
assignments. Here the port is one of its own (cluster-internal in Helm: neither the Service's `http` port
nor the ingress leads to it), and a scrape costs the database nothing: it reads the last values.

Besides the process's own metrics (and, in `mention-router run`, the stages'), the API reports the
departments' queues: `mr_queue_assignments{department,status}` and `mr_sla_overdue_assignments{department}`.
`QueueGauges` computes them in the background every `MR_METRICS_BUSINESS_INTERVAL_S`, each round bounded
in time, from the counts the triggers of migration 0007 keep (a few dozen rows) and the partial index over
the assignments waiting for a response. A database outage keeps the last values, counts
`mr_business_metrics_errors_total` and leaves `mr_business_metrics_updated_timestamp_seconds` behind; the
task itself goes on. Every API replica reports the same database-wide values: aggregate with max().
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db import AssignmentCountRow, AssignmentRow
from shared.db.models import AWAITING_STATUSES
from shared.errors import is_transient
from shared.events import utcnow
from shared.metrics import MetricsServer, exposition
from shared.settings import DEPARTMENTS, Settings

log = logging.getLogger(__name__)

# One round of queries may take at most this long (or the interval, if shorter); then it is abandoned
# and counted as an error, and the next round starts on time.
ROUND_TIMEOUT_S = 10.0


class QueueGauges:
    """The departments' queue gauges, in a registry of their own, refreshed by `run`."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, interval_s: float) -> None:
        self._sessions = sessions
        self.interval_s = interval_s
        self.registry = CollectorRegistry(auto_describe=True)
        self.queue = Gauge(
            "mr_queue_assignments",
            "Assignments per department and status (computed in the background, see "
            "mr_business_metrics_updated_timestamp_seconds).",
            ["department", "status"],
            registry=self.registry,
        )
        self.overdue = Gauge(
            "mr_sla_overdue_assignments",
            f"Assignments waiting for a first response ({', '.join(AWAITING_STATUSES)}) past their SLA.",
            ["department"],
            registry=self.registry,
        )
        self.updated = Gauge(
            "mr_business_metrics_updated_timestamp_seconds",
            "When the queue gauges were last computed (Unix time; 0: not yet).",
            registry=self.registry,
        )
        self.errors = Counter(
            "mr_business_metrics_errors_total",
            "Rounds of the queue gauges that failed (database unavailable, or too slow).",
            registry=self.registry,
        )
        for department in DEPARTMENTS:
            self.queue.labels(department, "new")
            self.overdue.labels(department)
        self._statuses: set[tuple[str, str]] = set()

    def exposition(self) -> bytes:
        """The process's metrics and the queue gauges, in the Prometheus text format."""
        return exposition() + generate_latest(self.registry)

    async def refresh(self, *, now: datetime | None = None) -> None:
        """Compute the gauges once (two small queries)."""
        now = now or utcnow()
        # As in GET /v1/queues: literal status lists, so that PostgreSQL matches the partial index.
        awaiting = AssignmentRow.status.in_(
            bindparam("awaiting", AWAITING_STATUSES, expanding=True, literal_execute=True)
        )
        async with self._sessions() as session:
            counts = (
                await session.execute(
                    select(
                        AssignmentCountRow.department,
                        AssignmentCountRow.status,
                        func.sum(AssignmentCountRow.n),
                    ).group_by(AssignmentCountRow.department, AssignmentCountRow.status)
                )
            ).all()
            late = (
                await session.execute(
                    select(AssignmentRow.department, func.count())
                    .where(awaiting, AssignmentRow.sla_due_at < now)
                    .group_by(AssignmentRow.department)
                )
            ).all()
        statuses = {(str(d), str(s)): int(n or 0) for d, s, n in counts}
        for gone in self._statuses - set(statuses):  # a count the table no longer has reads 0
            self.queue.labels(*gone).set(0)
        for (department, status), n in statuses.items():
            self.queue.labels(department, status).set(n)
        self._statuses = set(statuses)
        overdue = {str(d): int(n) for d, n in late}
        for department in {*DEPARTMENTS, *overdue}:
            self.overdue.labels(department).set(overdue.get(department, 0))
        self.updated.set(time.time())

    async def run(self, stop: asyncio.Event) -> None:
        """Refresh every `interval_s` until `stop`; a failed round is logged and counted, never fatal."""
        while not stop.is_set():
            try:
                async with asyncio.timeout(min(ROUND_TIMEOUT_S, self.interval_s)):
                    await self.refresh()
            except TimeoutError:
                self.errors.inc()
                log.warning("queue gauges: the database did not answer in time; keeping the last values")
            except Exception as exc:
                self.errors.inc()
                if is_transient(exc):
                    log.warning("queue gauges: database unavailable (%s); keeping the last values", exc)
                else:
                    # Metrics must not stop the API: anything else is logged with its trace, then retried.
                    log.exception("queue gauges: unexpected failure; keeping the last values")
            with suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):
                    await stop.wait()


@asynccontextmanager
async def api_metrics(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> AsyncIterator[MetricsServer | None]:
    """Serve the metrics on `MR_METRICS_HOST:MR_METRICS_PORT` with the queue gauges computed in the
    background, for as long as the block runs; nothing at all with `MR_METRICS_PORT=0`. The probes stay
    on the API's own port (its /readyz checks the database and the broker), so this port answers only
    /metrics."""
    if not settings.metrics_port:
        yield None
        return
    gauges = QueueGauges(sessions, interval_s=settings.metrics_business_interval_s)
    server = MetricsServer(
        host=settings.metrics_host,
        port=settings.metrics_port,
        ready=lambda: True,
        collect=gauges.exposition,
        probes=False,
    )
    try:
        await server.start()
    except OSError as exc:
        # As the stages do: on a shared host another process may hold the port; the API goes on without.
        log.warning(
            "api: cannot serve metrics on %s:%d (%s); set MR_METRICS_PORT to another port, or 0",
            settings.metrics_host,
            settings.metrics_port,
            exc.strerror or exc,
        )
        yield None
        return
    stop = asyncio.Event()
    task = asyncio.create_task(gauges.run(stop), name="queue-gauges")
    try:
        yield server
    finally:
        stop.set()
        try:
            async with asyncio.timeout(ROUND_TIMEOUT_S + 1):
                await task
        except TimeoutError:  # pragma: no cover - a round is bounded; this only guards the shutdown
            task.cancel()
        await server.stop()
