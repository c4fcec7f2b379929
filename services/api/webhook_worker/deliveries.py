"""The SQL on the deliveries and endpoints tables, and the rows and jobs built from them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.webhook_worker.retry import Verdict
from services.api.webhook_worker.sender import Job, Outcome
from shared.db import WebhookDeliveryRow, WebhookEndpointRow
from shared.settings import Settings

# Statuses of a delivery that still waits for the sender.
WAITING = ("pending", "retrying")
# A claimed delivery is someone's for the request's timeout plus this; then another sender may take it.
LEASE_MARGIN_S = 30.0


def lease_end(settings: Settings, now: datetime) -> datetime:
    """Until when a delivery claimed (or a ping sent) `now` is left alone by the other senders."""
    return now + timedelta(seconds=settings.webhook_timeout_s + LEASE_MARGIN_S)


def delivery_row(
    endpoint_id: int, event_id: str, event_type: str, mention_id: str, payload: bytes, now: datetime
) -> dict[str, Any]:
    """A new, pending delivery."""
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


def signing_keys(endpoint: WebhookEndpointRow, now: datetime) -> tuple[str, ...]:
    """The endpoint's secret, and its predecessor while that is still valid after a rotation."""
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret and expires is not None and aware(expires) > now:
        return (endpoint.secret, endpoint.previous_secret)
    return (endpoint.secret,)


def job_of(delivery: WebhookDeliveryRow, endpoint: WebhookEndpointRow, now: datetime) -> Job:
    return Job(
        delivery_id=delivery.id,
        endpoint_id=endpoint.id,
        url=endpoint.url,
        secrets=signing_keys(endpoint, now),
        event_type=delivery.event_type,
        payload=delivery.payload,
        attempt=delivery.attempts,
    )


def aware(when: datetime) -> datetime:
    # SQLite hands back naive UTC times where the column type's processing does not apply.
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


# -- the fan-out's queries


async def any_enabled_endpoint(session: AsyncSession) -> bool:
    found = await session.scalar(
        select(WebhookEndpointRow.id).where(WebhookEndpointRow.enabled.is_(True)).limit(1)
    )
    return found is not None


async def enabled_endpoints(
    session: AsyncSession, departments: Sequence[str]
) -> dict[str, list[tuple[int, frozenset[str], int]]]:
    """The enabled endpoints of these departments: (id, event types, created at in epoch ms) by department."""
    endpoints = (
        await session.execute(
            select(
                WebhookEndpointRow.id,
                WebhookEndpointRow.department,
                WebhookEndpointRow.event_types,
                WebhookEndpointRow.created_at,
            ).where(
                WebhookEndpointRow.enabled.is_(True),
                WebhookEndpointRow.department.in_(sorted(set(departments))),
            )
        )
    ).all()
    by_department: dict[str, list[tuple[int, frozenset[str], int]]] = {}
    for endpoint_id, department, event_types, created_at in endpoints:
        by_department.setdefault(department, []).append(
            (endpoint_id, frozenset(event_types), int(created_at.timestamp() * 1000))
        )
    return by_department


# -- the sender's queries


async def lock_due(
    session: AsyncSession, *, now: datetime, limit: int, busy: Sequence[int]
) -> Sequence[tuple[WebhookDeliveryRow, WebhookEndpointRow]]:
    """Up to `limit` due deliveries of enabled endpoints other than `busy`, oldest due first, locked for
    this transaction (rows another sender has locked are skipped)."""
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
    return [(delivery, endpoint) for delivery, endpoint in (await session.execute(query)).all()]


async def record_attempt(
    session: AsyncSession, job: Job, outcome: Outcome, verdict: Verdict, *, now: datetime
) -> None:
    """Write the attempt's result on its delivery; on 410 Gone, disable the endpoint, saying why."""
    values: dict[str, Any] = {
        "last_status_code": outcome.status_code,
        "last_error": outcome.error,
        "last_duration_ms": outcome.duration_ms,
        "next_attempt_at": verdict.next_attempt_at,
        "status": verdict.status,
    }
    if outcome.ok:
        values["delivered_at"] = now
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


async def backlog(session: AsyncSession, *, now: datetime) -> tuple[int, datetime | None]:
    """Deliveries waiting (database-wide), and when the longest-waiting due one became due."""
    waiting = await session.scalar(
        select(func.count()).select_from(WebhookDeliveryRow).where(WebhookDeliveryRow.status.in_(WAITING))
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
    return waiting or 0, oldest


async def insert_delivery(session: AsyncSession, row: dict[str, Any]) -> int:
    """Insert one delivery; its id."""
    result = await session.execute(insert(WebhookDeliveryRow).values(**row).returning(WebhookDeliveryRow.id))
    return int(result.scalar_one())
