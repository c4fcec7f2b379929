"""Outbound webhooks, the delivery side: routed mentions fanned out to the departments' endpoints, POSTed
with an HMAC-SHA256 signature, retried with backoff.

Two loops run in every API process (unless `MR_WEBHOOK_WORKER=false`):

- the fan-out consumes the department topics `mentions.routed.<department>` as its own consumer group, through
  a Stage: for each record and each enabled endpoint of that department subscribed to the event's type, it
  inserts a delivery, one transaction per batch, and the offsets are committed after that transaction.
  Deliveries are unique per (endpoint, event id = `ce_id`), so a redelivered record inserts nothing twice.
  The consumer joins its group once some endpoint is enabled, and an endpoint only gets events published
  after it was registered (the group starts at the topics' beginning the first time it runs).
- the sender claims due deliveries (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so API replicas share them) by
  moving their `next_attempt_at` past a lease, POSTs them through the SSRF guard, and records the answer:
  2xx delivered; 410 Gone dead, and the endpoint disabled; anything else (another status, a timeout, a
  refused connection) tried again after the retry schedule, and dead after `MR_WEBHOOK_MAX_ATTEMPTS`. A
  process that stops mid-request leaves the delivery to be tried again once the lease ends: at-least-once,
  and receivers drop duplicates by the `X-MentionRouter-Delivery` header.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import hmac
import logging
import random
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.api.deps import BusHolder
from shared.bus.base import Record
from shared.bus.codec import CE_TYPE_PREFIX
from shared.db import WebhookDeliveryRow, WebhookEndpointRow, insert_ignore
from shared.errors import PoisonMessage, is_transient
from shared.events import utcnow
from shared.netguard import NetPolicy, UnsafeURL, check_url, guarded_transport
from shared.settings import DEPARTMENTS, Settings
from shared.stage import BatchResult, Stage

log = logging.getLogger(__name__)

STAGE = "webhooks"
USER_AGENT = "MentionRouter-Webhooks/1"
# Statuses of a delivery that still waits for the sender.
WAITING = ("pending", "retrying")
# At most this many requests in flight to one endpoint from one process, so that a slow endpoint cannot
# take every slot of `webhook_concurrency` from the others.
PER_ENDPOINT_CONCURRENCY = 4
# A claimed delivery is someone's for the request's timeout plus this; then another sender may take it.
LEASE_MARGIN_S = 30.0
# How often a process without the fan-out running checks whether some endpoint exists now.
ENDPOINT_CHECK_S = 5.0
# The backlog gauges are read from the database this often.
BACKLOG_INTERVAL_S = 15.0
# Of an answer that is not 2xx, this much of the body goes into the delivery log.
ERROR_BODY_CHARS = 300
_MAX_READ_BYTES = 64 * 1024
_CE_TYPE = re.compile(r"^" + re.escape(CE_TYPE_PREFIX) + r"(?P<type>[a-z0-9_.-]+)\.v\d+$")

DELIVERIES = Counter(
    "mr_webhook_deliveries_total",
    "Webhook requests by outcome: delivered (2xx), failed (tried again later), dead (given up after the "
    "last attempt), gone (410: the endpoint was disabled).",
    ["outcome"],
)
for _outcome in ("delivered", "failed", "dead", "gone"):
    DELIVERIES.labels(_outcome)  # every series from zero, so that rate() sees the first increment
QUEUED = Counter("mr_webhook_deliveries_queued_total", "Deliveries the fan-out created (one per endpoint).")
REQUEST_SECONDS = Histogram(
    "mr_webhook_request_duration_seconds",
    "Time from sending a webhook request to its answer (or its failure).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
WAITING_GAUGE = Gauge(
    "mr_webhook_deliveries_waiting",
    "Deliveries not yet delivered nor dead (pending or retrying), database-wide, read every 15 s.",
)
OLDEST_DUE = Gauge(
    "mr_webhook_oldest_due_seconds",
    "How long the longest-waiting due delivery has been due (0: none): the sender falling behind.",
)


# -- signing ----------------------------------------------------------------------------------------------


def new_secret() -> str:
    """A signing secret: the HMAC key is this whole string, as UTF-8."""
    return "whsec_" + secrets.token_urlsafe(32)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """`sha256=<hex>`: HMAC-SHA256 of `<timestamp>.<body>`, keyed with the secret."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    secret: str,
    *,
    timestamp: str,
    body: bytes,
    signature: str,
    now: float | None = None,
    tolerance_s: int = 300,
) -> bool:
    """What a receiver does: the timestamp is recent and one of the header's signatures (there are two
    while a rotated secret's predecessor is still valid) is ours."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent) > tolerance_s:
        return False
    expected = sign(secret, sent, body)
    return any(hmac.compare_digest(expected, s.strip()) for s in signature.split(","))


def signed_headers(
    *, keys: Sequence[str], event_type: str, delivery_id: int, body: bytes, timestamp: int
) -> dict[str, str]:
    """The request's headers; one signature per key (two while a rotated secret's predecessor is valid)."""
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-MentionRouter-Event": event_type,
        "X-MentionRouter-Delivery": str(delivery_id),
        "X-MentionRouter-Timestamp": str(timestamp),
        "X-MentionRouter-Signature": ", ".join(sign(k, timestamp, body) for k in keys),
    }


# -- retry schedule ---------------------------------------------------------------------------------------


def retry_delay(attempt: int, schedule: Sequence[float], *, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): the schedule's entry for it (its last
    entry for later attempts) with ±20 % jitter, so that retries after an endpoint's outage spread out."""
    base = schedule[min(max(attempt, 1), len(schedule)) - 1]
    return base * (rng or random).uniform(0.8, 1.2)


# -- URL policy -------------------------------------------------------------------------------------------


def net_policy(settings: Settings) -> NetPolicy:
    return NetPolicy.from_setting(settings.webhook_allowed_networks, setting="MR_WEBHOOK_ALLOWED_NETWORKS")


def check_scheme(url: str, settings: Settings) -> None:
    scheme = urlsplit(url).scheme
    if scheme == "https" or (scheme == "http" and settings.webhook_allow_http):
        return
    raise UnsafeURL(
        f"a webhook URL must use https, not {scheme or 'nothing'!r}"
        + (" (http is allowed only with MR_WEBHOOK_ALLOW_HTTP)" if scheme == "http" else "")
    )


async def check_endpoint_url(url: str, settings: Settings) -> None:
    """Raise UnsafeURL unless `url` may receive webhooks: https (http only with MR_WEBHOOK_ALLOW_HTTP), and a
    host whose addresses are all public unless MR_WEBHOOK_ALLOWED_NETWORKS allows them. The sender checks
    the address again when it connects (DNS may have changed)."""
    check_scheme(url, settings)
    await check_url(url, net_policy(settings))


# -- sending ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One attempt of one delivery, with what the request needs (read when it was claimed)."""

    delivery_id: int
    endpoint_id: int
    url: str
    secrets: tuple[str, ...]
    event_type: str
    payload: bytes
    attempt: int


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None
    duration_ms: int
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def gone(self) -> bool:
        return self.status_code == 410


def _retry_after(value: str | None) -> float | None:
    # Only the delta-seconds form; an HTTP date is left to the schedule.
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


class Sender:
    """POSTs one delivery. Its client connects through the SSRF guard, follows no redirect, and keeps
    connections to the endpoints alive between requests."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            limits = httpx.Limits(
                max_connections=self._settings.webhook_concurrency + 4,
                max_keepalive_connections=self._settings.webhook_concurrency,
            )
            self._client = httpx.AsyncClient(
                transport=guarded_transport(net_policy(self._settings), limits=limits),
                timeout=httpx.Timeout(self._settings.webhook_timeout_s),
                follow_redirects=False,
                trust_env=False,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def post(self, job: Job) -> Outcome:
        started = time.monotonic()

        def elapsed() -> int:
            return int((time.monotonic() - started) * 1000)

        timestamp = int(time.time())
        headers = signed_headers(
            keys=job.secrets,
            event_type=job.event_type,
            delivery_id=job.delivery_id,
            body=job.payload,
            timestamp=timestamp,
        )
        try:
            check_scheme(job.url, self._settings)
            async with self._http().stream("POST", job.url, content=job.payload, headers=headers) as response:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body.extend(chunk)
                    if len(body) >= _MAX_READ_BYTES:
                        break
        except UnsafeURL as exc:
            return Outcome(None, str(exc), elapsed())
        except httpx.TimeoutException:
            return Outcome(None, f"no answer within {self._settings.webhook_timeout_s:g} s", elapsed())
        except httpx.HTTPError as exc:
            return Outcome(None, f"{type(exc).__name__}: {exc}"[:1000], elapsed())
        finally:
            REQUEST_SECONDS.observe(time.monotonic() - started)
        code = response.status_code
        if 200 <= code < 300:
            return Outcome(code, None, elapsed())
        text = bytes(body[: ERROR_BODY_CHARS * 4]).decode("utf-8", "replace")[:ERROR_BODY_CHARS].strip()
        what = f"HTTP {code}" + (" (redirects are not followed)" if 300 <= code < 400 else "")
        return Outcome(
            code,
            f"{what}: {text}" if text else what,
            elapsed(),
            _retry_after(response.headers.get("retry-after")),
        )


# -- the worker -------------------------------------------------------------------------------------------


def event_type_of(record: Record) -> str:
    """`mention.routed` or `mention.escalated`, from the CloudEvents type header (else the JSON's `type`)."""
    match = _CE_TYPE.match(record.headers.get("ce_type", ""))
    if match is not None:
        return match["type"]
    try:
        value = orjson.loads(record.value)
    except orjson.JSONDecodeError:
        value = None
    if isinstance(value, dict) and isinstance(value.get("type"), str):
        return str(value["type"])
    raise PoisonMessage(
        f"{record.topic}[{record.partition}]@{record.offset}: no ce_type header and no `type` in the value"
    )


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
        self._bus = bus
        self._clock = clock
        self.sender = Sender(settings)
        self._departments = {settings.topic_routed(d): d for d in DEPARTMENTS}
        self._wake = asyncio.Event()
        self._endpoint_added = asyncio.Event()
        self._in_flight: collections.Counter[int] = collections.Counter()
        self._backlog_at = 0.0

    def wake(self) -> None:
        """Something changed (an endpoint registered or re-enabled, a delivery to retry): look now."""
        self._wake.set()
        self._endpoint_added.set()

    async def aclose(self) -> None:
        await self.sender.aclose()

    # -- fan-out

    async def fan_out(self, records: Sequence[Record]) -> BatchResult:
        """The stage's handler: one delivery per (record, subscribed endpoint), in one transaction."""
        result = BatchResult()
        items: list[tuple[Record, str, str]] = []
        for record in records:
            department = self._departments.get(record.topic)
            if department is None:
                continue
            try:
                items.append((record, department, event_type_of(record)))
            except PoisonMessage as exc:
                result.dead.append((record, exc))
        if not items:
            return result
        now = self._clock()
        rows: list[dict[str, Any]] = []
        async with self._sessions() as session, session.begin():
            endpoints = (
                await session.execute(
                    select(
                        WebhookEndpointRow.id,
                        WebhookEndpointRow.department,
                        WebhookEndpointRow.event_types,
                        WebhookEndpointRow.created_at,
                    ).where(
                        WebhookEndpointRow.enabled.is_(True),
                        WebhookEndpointRow.department.in_(sorted({d for _, d, _ in items})),
                    )
                )
            ).all()
            by_department: dict[str, list[tuple[int, frozenset[str], int]]] = {}
            for endpoint_id, department, event_types, created_at in endpoints:
                by_department.setdefault(department, []).append(
                    (endpoint_id, frozenset(event_types), int(created_at.timestamp() * 1000))
                )
            for record, department, event_type in items:
                event_id = record.headers.get("ce_id") or f"{record.topic}:{record.partition}:{record.offset}"
                for endpoint_id, event_types, created_ms in by_department.get(department, ()):
                    if event_type not in event_types:
                        continue
                    if record.timestamp_ms and record.timestamp_ms < created_ms:
                        continue  # published before the endpoint existed
                    rows.append(_delivery(endpoint_id, event_id, event_type, record.key, record.value, now))
            await insert_ignore(session, WebhookDeliveryRow, rows, keys=["endpoint_id", "event_id"])
        if rows:
            QUEUED.inc(len(rows))
            self._wake.set()
        return result

    async def _any_endpoint(self) -> bool:
        async with self._sessions() as session:
            found = await session.scalar(
                select(WebhookEndpointRow.id).where(WebhookEndpointRow.enabled.is_(True)).limit(1)
            )
        return found is not None

    async def _fan_out_loop(self, stop: asyncio.Event) -> None:
        topics = list(self._departments)
        failures = 0
        while not stop.is_set():
            consumer = None
            try:
                self._endpoint_added.clear()
                if not await self._any_endpoint():
                    await _wait(stop, self._endpoint_added, ENDPOINT_CHECK_S)
                    continue
                bus = await self._bus.get()
                await bus.ensure_topics(topics)
                consumer = bus.consumer(topics, group_id=self._settings.group(STAGE))
                stage = Stage(
                    name=STAGE,
                    bus=bus,
                    consumer=consumer,
                    handler=self.fan_out,
                    dlq_topic=self._settings.topic_dlq,
                    max_records=self._settings.consumer_max_records,
                    max_attempts=self._settings.max_attempts,
                )
                log.info("webhooks: fanning out %s", ", ".join(topics))
                await stage.run(stop)
            except Exception as exc:  # noqa: BLE001 - the API keeps serving; the fan-out starts over
                failures += 1
                delay = min(30.0, 0.5 * 2**failures)
                _log_failure("the webhook fan-out", exc, delay)
                if consumer is not None:
                    with contextlib.suppress(Exception):
                        await consumer.stop()
                await _wait(stop, None, delay)

    # -- sender

    async def _claim(self, limit: int) -> list[Job]:
        """Take up to `limit` due deliveries: attempts counted, next_attempt_at moved past the lease."""
        now = self._clock()
        lease = now + timedelta(seconds=self._settings.webhook_timeout_s + LEASE_MARGIN_S)
        busy = [e for e, n in self._in_flight.items() if n >= PER_ENDPOINT_CONCURRENCY]
        query = (
            select(WebhookDeliveryRow, WebhookEndpointRow)
            .join(WebhookEndpointRow, WebhookEndpointRow.id == WebhookDeliveryRow.endpoint_id)
            .where(
                WebhookDeliveryRow.status.in_(WAITING),
                WebhookDeliveryRow.next_attempt_at <= now,
                WebhookEndpointRow.enabled.is_(True),
            )
            .order_by(WebhookDeliveryRow.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True, of=WebhookDeliveryRow)
        )
        if busy:
            query = query.where(WebhookDeliveryRow.endpoint_id.not_in(busy))
        jobs: list[Job] = []
        taken: collections.Counter[int] = collections.Counter()
        async with self._sessions() as session, session.begin():
            for delivery, endpoint in (await session.execute(query)).all():
                if self._in_flight[endpoint.id] + taken[endpoint.id] >= PER_ENDPOINT_CONCURRENCY:
                    # Left for later; look again at once, without that endpoint, for others' deliveries.
                    self._wake.set()
                    continue
                taken[endpoint.id] += 1
                delivery.attempts += 1
                delivery.next_attempt_at = lease
                delivery.last_attempt_at = now
                jobs.append(_job(delivery, endpoint, now))
        return jobs

    async def _record(self, job: Job, outcome: Outcome, *, retry: bool = True) -> str:
        """Write the attempt's result; the delivery's new status."""
        now = self._clock()
        values: dict[str, Any] = {
            "last_status_code": outcome.status_code,
            "last_error": outcome.error,
            "last_duration_ms": outcome.duration_ms,
            "next_attempt_at": None,
        }
        if outcome.ok:
            status, metric = "delivered", "delivered"
            values["delivered_at"] = now
        elif outcome.gone:
            status, metric = "dead", "gone"
        elif not retry or job.attempt >= self._settings.webhook_max_attempts:
            status, metric = "dead", "dead"
        else:
            status, metric = "retrying", "failed"
            schedule = self._settings.webhook_retry_schedule_s
            delay = retry_delay(job.attempt, schedule)
            if outcome.retry_after_s is not None:
                delay = max(delay, min(outcome.retry_after_s, max(schedule)))
            values["next_attempt_at"] = now + timedelta(seconds=delay)
        values["status"] = status
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(WebhookDeliveryRow).where(WebhookDeliveryRow.id == job.delivery_id).values(**values)
            )
            if outcome.gone:
                await session.execute(
                    update(WebhookEndpointRow)
                    .where(WebhookEndpointRow.id == job.endpoint_id, WebhookEndpointRow.enabled.is_(True))
                    .values(
                        enabled=False,
                        updated_at=now,
                        disabled_reason=f"disabled at {now.isoformat(timespec='seconds')}: the endpoint "
                        f"answered 410 Gone to delivery {job.delivery_id}",
                    )
                )
        DELIVERIES.labels(metric).inc()
        if outcome.gone:
            log.warning("webhook endpoint %d answered 410 Gone: disabled", job.endpoint_id)
        return status

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
            waiting = await session.scalar(
                select(func.count())
                .select_from(WebhookDeliveryRow)
                .where(WebhookDeliveryRow.status.in_(WAITING))
            )
            oldest = await session.scalar(
                select(func.min(WebhookDeliveryRow.next_attempt_at))
                .join(WebhookEndpointRow, WebhookEndpointRow.id == WebhookDeliveryRow.endpoint_id)
                .where(
                    WebhookDeliveryRow.status.in_(WAITING),
                    WebhookDeliveryRow.next_attempt_at <= now,
                    WebhookEndpointRow.enabled.is_(True),
                )
            )
        WAITING_GAUGE.set(waiting or 0)
        OLDEST_DUE.set(max(0.0, (now - _aware(oldest)).total_seconds()) if oldest is not None else 0.0)

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
                    _log_failure("the webhook sender", exc, min(30.0, 0.5 * 2**failures))
                for job in jobs:
                    self._in_flight[job.endpoint_id] += 1
                    task = asyncio.create_task(self._deliver(job), name=f"webhook-{job.delivery_id}")
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                pause = (
                    self._settings.webhook_poll_interval_s if not failures else min(30.0, 0.5 * 2**failures)
                )
                await _wait(stop, self._wake, pause, also=tasks if not failures else ())
        finally:
            # Let the requests in flight finish and be recorded (each within the request timeout).
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=self._settings.webhook_timeout_s + 5)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)

    async def run(self, stop: asyncio.Event) -> None:
        """The fan-out and the sender, until `stop`."""
        sender = asyncio.create_task(self._send_loop(stop), name="webhook-sender")
        try:
            await self._fan_out_loop(stop)
        finally:
            stop.set()
            await sender

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
        row = _delivery(endpoint.id, f"ping:{secrets.token_hex(8)}", "ping", "", body, now)
        # Leased like a claimed delivery: the sender leaves it alone while this request is in flight, and
        # sends it if this process stops before recording the answer.
        lease = now + timedelta(seconds=self._settings.webhook_timeout_s + LEASE_MARGIN_S)
        row.update(attempts=1, next_attempt_at=lease, last_attempt_at=now)
        async with self._sessions() as session, session.begin():
            delivery_id = int(
                (
                    await session.execute(
                        insert(WebhookDeliveryRow).values(**row).returning(WebhookDeliveryRow.id)
                    )
                ).scalar_one()
            )
        job = Job(
            delivery_id=delivery_id,
            endpoint_id=endpoint.id,
            url=endpoint.url,
            secrets=_secrets(endpoint, now),
            event_type="ping",
            payload=body,
            attempt=1,
        )
        await self._record(job, await self.sender.post(job), retry=False)
        return delivery_id


def _delivery(
    endpoint_id: int, event_id: str, event_type: str, mention_id: str, payload: bytes, now: datetime
) -> dict[str, Any]:
    # Every column, so that the PostgreSQL bulk insert (one unnest per column) applies.
    return {
        "endpoint_id": endpoint_id,
        "event_id": event_id[:200],
        "event_type": event_type[:64],
        "mention_id": mention_id[:64],
        "payload": payload,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "last_attempt_at": None,
        "last_status_code": None,
        "last_error": None,
        "last_duration_ms": None,
        "created_at": now,
        "delivered_at": None,
    }


def _secrets(endpoint: WebhookEndpointRow, now: datetime) -> tuple[str, ...]:
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret and expires is not None and _aware(expires) > now:
        return (endpoint.secret, endpoint.previous_secret)
    return (endpoint.secret,)


def _job(delivery: WebhookDeliveryRow, endpoint: WebhookEndpointRow, now: datetime) -> Job:
    return Job(
        delivery_id=delivery.id,
        endpoint_id=endpoint.id,
        url=endpoint.url,
        secrets=_secrets(endpoint, now),
        event_type=delivery.event_type,
        payload=delivery.payload,
        attempt=delivery.attempts,
    )


def _aware(when: datetime) -> datetime:
    # SQLite hands back naive UTC times where the column type's processing does not apply.
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


async def _wait(
    stop: asyncio.Event,
    wake: asyncio.Event | None,
    seconds: float,
    *,
    also: set[asyncio.Task[None]] | tuple[()] = (),
) -> None:
    """Until `stop`, `wake`, one of `also` finishing, or `seconds`, whichever comes first."""
    waiters = [asyncio.ensure_future(stop.wait())]
    if wake is not None:
        waiters.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait([*waiters, *also], timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


def _log_failure(what: str, exc: BaseException, delay: float) -> None:
    if is_transient(exc):
        log.warning("%s: %s (%s); trying again in %.1fs", what, type(exc).__name__, exc, delay)
    else:
        log.error("%s failed; trying again in %.1fs", what, delay, exc_info=exc)
