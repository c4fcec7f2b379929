"""The SQL of the webhook endpoints and their delivery log (the worker's own is in
services/api/webhook_worker/)."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import WebhookDeliveryRow, WebhookEndpointRow


async def endpoint_in(
    session: AsyncSession, webhook_id: int, departments: Collection[str]
) -> WebhookEndpointRow | None:
    """The endpoint when it belongs to one of `departments`."""
    return await session.scalar(
        select(WebhookEndpointRow).where(
            WebhookEndpointRow.id == webhook_id, WebhookEndpointRow.department.in_(departments)
        )
    )


async def endpoints_of(
    session: AsyncSession, departments: Collection[str], department: str | None
) -> Sequence[WebhookEndpointRow]:
    """The endpoints of `departments` (of `department` alone when given), oldest first."""
    query = select(WebhookEndpointRow).where(WebhookEndpointRow.department.in_(departments))
    if department is not None:
        query = query.where(WebhookEndpointRow.department == department)
    return (await session.scalars(query.order_by(WebhookEndpointRow.id))).all()


async def endpoint_count(session: AsyncSession, department: str) -> int:
    """How many endpoints the department has."""
    count = await session.scalar(
        select(func.count())
        .select_from(WebhookEndpointRow)
        .where(WebhookEndpointRow.department == department)
    )
    return count or 0


async def delete_endpoint(session: AsyncSession, webhook_id: int) -> None:
    """The endpoint, and with it its delivery log (ON DELETE CASCADE)."""
    await session.execute(delete(WebhookEndpointRow).where(WebhookEndpointRow.id == webhook_id))


async def delivery_of(session: AsyncSession, endpoint_id: int, delivery_id: int) -> WebhookDeliveryRow | None:
    """The delivery when it is one of the endpoint's."""
    return await session.scalar(
        select(WebhookDeliveryRow).where(
            WebhookDeliveryRow.id == delivery_id, WebhookDeliveryRow.endpoint_id == endpoint_id
        )
    )


async def deliveries(
    session: AsyncSession, endpoint_id: int, *, status: str | None, before_id: int | None, limit: int
) -> list[WebhookDeliveryRow]:
    """Up to `limit` of the endpoint's deliveries, newest first: with `status` only those, with
    `before_id` only older ones than that delivery."""
    query = select(WebhookDeliveryRow).where(WebhookDeliveryRow.endpoint_id == endpoint_id)
    if status is not None:
        query = query.where(WebhookDeliveryRow.status == status)
    if before_id is not None:
        query = query.where(WebhookDeliveryRow.id < before_id)
    return list(await session.scalars(query.order_by(WebhookDeliveryRow.id.desc()).limit(limit)))
