"""The webhook worker of one API process: the fan-out and the sender (`run`), and the one-off `ping`."""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
import time
from collections.abc import Callable
from datetime import datetime

import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.api.deps import BusHolder
from services.api.webhook_worker.deliveries import (
    aware,
    backlog,
    delivery_row,
    insert_delivery,
    job_of,
    lease_end,
    lock_due,
    record_attempt,
    signing_keys,
)
from services.api.webhook_worker.fanout import FanOut
from services.api.webhook_worker.loops import backoff, log_failure, wait
from services.api.webhook_worker.metrics import DELIVERIES, OLDEST_DUE, WAITING_GAUGE
from services.api.webhook_worker.retry import judge
from services.api.webhook_worker.sender import Job, Outcome, Sender
from shared.db import WebhookEndpointRow
from shared.errors import is_transient
from shared.events import utcnow
from shared.settings import Settings

log = logging.getLogger(__name__)

# At most this many requests in flight to one endpoint from one process, so that a slow endpoint cannot
# take every slot of `webhook_concurrency` from the others.
PER_ENDPOINT_CONCURRENCY = 4
# The backlog gauges are read from the database this often.
BACKLOG_INTERVAL_S = 15.0


class WebhookWorker:
    """The fan-out and the sender of one API process (`run`), and the one-off ping (`ping`)."""

    def __init__(
        self,
        settings: Settings,
        *,
        sessions: async_sessionmaker[AsyncSession],
        bus: BusHolder,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._clock = clock
        self.sender = Sender(settings)
        self._wake = asyncio.Event()
        self.fan_out = FanOut(settings, sessions=sessions, bus=bus, clock=clock, queued=self._wake)
        self._in_flight: collections.Counter[int] = collections.Counter()
        self._backlog_at = 0.0

    def wake(self) -> None:
        """Something changed (an endpoint registered or re-enabled, a delivery to retry): look now."""
        self._wake.set()
        self.fan_out.endpoint_added.set()

    async def aclose(self) -> None:
        await self.sender.aclose()

    async def run(self, stop: asyncio.Event) -> None:
        """The fan-out and the sender, until `stop`."""
        sender = asyncio.create_task(self._send_loop(stop), name="webhook-sender")
        try:
            await self.fan_out.run(stop)
        finally:
            stop.set()
            await sender

    # -- sender

    async def _claim(self, limit: int) -> list[Job]:
        """Take up to `limit` due deliveries: attempts counted, next_attempt_at moved past the lease."""
        now = self._clock()
        lease = lease_end(self._settings, now)
        busy = [e for e, n in self._in_flight.items() if n >= PER_ENDPOINT_CONCURRENCY]
        jobs: list[Job] = []
        taken: collections.Counter[int] = collections.Counter()
        async with self._sessions() as session, session.begin():
            for delivery, endpoint in await lock_due(session, now=now, limit=limit, busy=busy):
                if self._in_flight[endpoint.id] + taken[endpoint.id] >= PER_ENDPOINT_CONCURRENCY:
                    # Left for later; look again at once, without that endpoint, for others' deliveries.
                    self._wake.set()
                    continue
                taken[endpoint.id] += 1
                delivery.attempts += 1
                delivery.next_attempt_at = lease
                delivery.last_attempt_at = now
                jobs.append(job_of(delivery, endpoint, now))
        return jobs

    async def _record(self, job: Job, outcome: Outcome, *, retry: bool = True) -> str:
        """Write the attempt's result; the delivery's new status."""
        now = self._clock()
        verdict = judge(outcome, attempt=job.attempt, retry=retry, settings=self._settings, now=now)
        async with self._sessions() as session, session.begin():
            await record_attempt(session, job, outcome, verdict, now=now)
        DELIVERIES.labels(verdict.metric).inc()
        if outcome.gone:
            log.warning("webhook endpoint %d answered 410 Gone: disabled", job.endpoint_id)
        return verdict.status

    async def _deliver(self, job: Job) -> None:
        try:
            outcome = await self.sender.post(job)
            # The result must be written, or the delivery is sent again after the lease: keep trying
            # through a short database outage.
            for attempt in range(6):
                try:
                    await self._record(job, outcome)
                    return
                except Exception as exc:
                    if not is_transient(exc) or attempt == 5:
                        raise
                    await asyncio.sleep(0.5 * 2**attempt)
        except Exception as exc:  # noqa: BLE001 - the delivery is taken again when its lease ends
            log.warning(
                "webhook delivery %d: could not record the attempt (%s: %s); it goes again after the lease",
                job.delivery_id,
                type(exc).__name__,
                exc,
            )
        finally:
            self._in_flight[job.endpoint_id] -= 1
            if self._in_flight[job.endpoint_id] <= 0:
                del self._in_flight[job.endpoint_id]

    async def _observe_backlog(self) -> None:
        if time.monotonic() - self._backlog_at < BACKLOG_INTERVAL_S:
            return
        self._backlog_at = time.monotonic()
        now = self._clock()
        async with self._sessions() as session:
            waiting, oldest = await backlog(session, now=now)
        WAITING_GAUGE.set(waiting)
        OLDEST_DUE.set(max(0.0, (now - aware(oldest)).total_seconds()) if oldest is not None else 0.0)

    async def _send_loop(self, stop: asyncio.Event) -> None:
        tasks: set[asyncio.Task[None]] = set()
        failures = 0
        try:
            while not stop.is_set():
                self._wake.clear()
                free = self._settings.webhook_concurrency - len(tasks)
                try:
                    jobs = await self._claim(free) if free > 0 else []
                    await self._observe_backlog()
                    failures = 0
                except Exception as exc:  # noqa: BLE001 - logged; the sender tries again after a pause
                    failures += 1
                    jobs = []
                    log_failure("the webhook sender", exc, backoff(failures))
                for job in jobs:
                    self._in_flight[job.endpoint_id] += 1
                    task = asyncio.create_task(self._deliver(job), name=f"webhook-{job.delivery_id}")
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                pause = self._settings.webhook_poll_interval_s if not failures else backoff(failures)
                await wait(stop, self._wake, pause, also=tasks if not failures else ())
        finally:
            # Let the requests in flight finish and be recorded (each within the request timeout).
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=self._settings.webhook_timeout_s + 5)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)

    # -- ping

    async def ping(self, endpoint: WebhookEndpointRow) -> int:
        """Send a `ping` event to `endpoint` now, once (no retries), logged as a delivery; its id."""
        now = self._clock()
        body = orjson.dumps(
            {
                "type": "ping",
                "schema_version": 1,
                "webhook_id": endpoint.id,
                "department": endpoint.department,
                "sent_at": now.isoformat().replace("+00:00", "Z"),
            }
        )
        row = delivery_row(endpoint.id, f"ping:{secrets.token_hex(8)}", "ping", "", body, now)
        # Leased like a claimed delivery: the sender leaves it alone while this request is in flight, and
        # sends it if this process stops before recording the answer.
        row.update(attempts=1, next_attempt_at=lease_end(self._settings, now), last_attempt_at=now)
        async with self._sessions() as session, session.begin():
            delivery_id = await insert_delivery(session, row)
        job = Job(
            delivery_id=delivery_id,
            endpoint_id=endpoint.id,
            url=endpoint.url,
            secrets=signing_keys(endpoint, now),
            event_type="ping",
            payload=body,
            attempt=1,
        )
        await self._record(job, await self.sender.post(job), retry=False)
        return delivery_id
