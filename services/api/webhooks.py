"""Outbound webhooks: a department registers an HTTPS endpoint and its routed (and escalated) mentions are
POSTed to it, signed with HMAC-SHA256, retried with backoff; the delivery log shows every attempt.

Reading a department's endpoints and their deliveries needs read access to the department; registering,
changing, deleting, rotating the secret, retrying and pinging need write access (403). An endpoint of a
department the key cannot read does not exist for it (404). The delivery side is
services/api/webhook_worker.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException, Query, Request, Response, status
from fastapi import Path as PathParam
from pydantic import AnyHttpUrl, BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.auth import PrincipalDep, check_read, check_write
from services.api.deps import BusHolder, SessionDep, SettingsDep
from services.api.inputs import LAX, RequestModel
from services.api.queries import webhooks as queries
from services.api.schemas import RowModel, from_row
from services.api.webhook_worker.signing import new_secret
from services.api.webhook_worker.urls import check_endpoint_url
from services.api.webhook_worker.worker import WebhookWorker
from shared.apikeys import Principal
from shared.db import WebhookDeliveryRow, WebhookEndpointRow
from shared.events import Department, utcnow
from shared.netguard import UnsafeURL
from shared.settings import Settings

# Ids are PostgreSQL integers (deliveries: bigint): out-of-range ids are a 422, not a database error.
WebhookId = Annotated[int, PathParam(ge=1, le=2_147_483_647, description="The endpoint's id.")]
DeliveryId = Annotated[int, PathParam(ge=1, le=9_223_372_036_854_775_807, description="The delivery's id.")]

webhooks_api = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

EventType = Literal["mention.routed", "mention.escalated"]
DeliveryStatus = Literal["pending", "retrying", "delivered", "dead"]
DEFAULT_EVENT_TYPES: list[EventType] = ["mention.routed", "mention.escalated"]
MAX_ENDPOINTS_PER_DEPARTMENT = 20
MAX_URL_LENGTH = 2000

_Responses = dict[int | str, dict[str, Any]]
_NOT_FOUND: _Responses = {
    404: {"description": "No such webhook (or one of a department this key cannot read)"}
}
_FORBIDDEN: _Responses = {403: {"description": "The key may read the department but not change it"}}


class WebhookCreate(RequestModel):
    department: Annotated[Department, LAX] = Field(description="Whose routed mentions the endpoint receives.")
    url: AnyHttpUrl = Field(
        description="Where to POST them: https (plain http only with MR_WEBHOOK_ALLOW_HTTP); an internal "
        "address is refused unless MR_WEBHOOK_ALLOWED_NETWORKS allows it."
    )
    event_types: list[EventType] = Field(
        default_factory=lambda: list(DEFAULT_EVENT_TYPES),
        min_length=1,
        description="`mention.routed` (a mention assigned to the department), `mention.escalated` (one of "
        "its assignments passed its SLA).",
    )
    description: str = Field(default="", max_length=500)


class WebhookUpdate(RequestModel):
    """The fields to change; the others stay as they are."""

    url: AnyHttpUrl | None = None
    event_types: list[EventType] | None = Field(default=None, min_length=1)
    enabled: bool | None = Field(
        default=None, description="false pauses deliveries; true resumes them (and clears disabled_reason)."
    )
    description: str | None = Field(default=None, max_length=500)


class WebhookPublic(RowModel):
    id: int
    department: str
    url: str
    event_types: list[str]
    enabled: bool
    disabled_reason: str | None = Field(
        description="Set when the system disabled the endpoint (it answered 410 Gone)."
    )
    description: str
    created_at: datetime
    created_by: str
    updated_at: datetime
    previous_secret_expires_at: datetime | None = Field(
        description="After a rotation: until then requests carry a second signature, with the old secret."
    )


class WebhookCreated(WebhookPublic):
    secret: str = Field(
        description="The HMAC-SHA256 key of the X-MentionRouter-Signature header. Shown this once."
    )


class WebhookList(BaseModel):
    items: list[WebhookPublic]


class SecretRotation(RequestModel):
    previous_valid_for_s: int = Field(
        default=86_400,
        ge=0,
        le=7 * 86_400,
        description="How long requests also carry a signature with the old secret (0: from now on only "
        "the new one), so that receivers can switch without refusing a delivery.",
    )


class WebhookSecret(BaseModel):
    id: int
    secret: str = Field(description="The new signing secret. Shown this once.")
    previous_secret_expires_at: datetime | None


class DeliveryPublic(RowModel):
    id: int = Field(description="Also the X-MentionRouter-Delivery header: receivers drop duplicates by it.")
    webhook_id: int = Field(validation_alias="endpoint_id")
    event_id: str = Field(description="The event's CloudEvents id (`ce_id`), or `ping:…`.")
    event_type: str
    mention_id: str
    status: DeliveryStatus = Field(
        description="pending (not tried yet), retrying (failed; tried again at next_attempt_at), "
        "delivered, dead (given up, or the endpoint answered 410)."
    )
    attempts: int
    last_status_code: int | None = Field(description="The HTTP status of the last attempt (null: no answer).")
    last_error: str | None
    last_duration_ms: int | None
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None


class DeliveryDetail(DeliveryPublic):
    payload: Any = Field(description="The body that is POSTed: the event as on the department's topic.")


class DeliveryPage(BaseModel):
    items: list[DeliveryPublic]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next (older) page; null at the end."
    )


async def get_worker(request: Request) -> WebhookWorker:
    worker: WebhookWorker = request.app.state.webhooks
    return worker


WorkerDep = Annotated[WebhookWorker, Depends(get_worker)]


@asynccontextmanager
async def webhook_worker(app: FastAPI, settings: Settings, bus: BusHolder) -> AsyncIterator[WebhookWorker]:
    """The worker of this API process (the fan-out and the sender running unless MR_WEBHOOK_WORKER=false),
    in `app.state.webhooks` for the routes; stopped, with its requests in flight finished, on exit."""
    worker = WebhookWorker(settings, sessions=app.state.sessions, bus=bus)
    app.state.webhooks = worker
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop), name="webhooks") if settings.webhook_worker else None
    try:
        yield worker
    finally:
        stop.set()
        if task is not None:
            await task
        await worker.aclose()


def _public(row: WebhookEndpointRow) -> WebhookPublic:
    """The endpoint as the API shows it: the row's columns, with the old secret's expiry (derived) only
    while an old secret is kept."""
    return from_row(WebhookPublic, row, previous_secret_expires_at=_old_secret_expiry(row))


def _old_secret_expiry(row: WebhookEndpointRow) -> datetime | None:
    return row.previous_secret_expires_at if row.previous_secret else None


async def _checked_url(settings: Settings, url: AnyHttpUrl) -> str:
    """The URL as stored; 422 when it is too long or the policy refuses it."""
    text = str(url)
    if len(text) > MAX_URL_LENGTH:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"the URL is over {MAX_URL_LENGTH} characters"
        )
    try:
        await check_endpoint_url(text, settings)
    except UnsafeURL as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    return text


async def _endpoint(
    session: AsyncSession, principal: Principal, webhook_id: int, *, write: bool
) -> WebhookEndpointRow:
    row = await queries.endpoint_in(session, webhook_id, principal.readable)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"webhook {webhook_id} not found")
    if write:
        check_write(principal, row.department)
    return row


async def _delivery(
    session: AsyncSession, endpoint: WebhookEndpointRow, delivery_id: int
) -> WebhookDeliveryRow:
    row = await queries.delivery_of(session, endpoint.id, delivery_id)
    if row is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"delivery {delivery_id} of webhook {endpoint.id} not found"
        )
    return row


@webhooks_api.post(
    "",
    response_model=WebhookCreated,
    status_code=status.HTTP_201_CREATED,
    responses={
        **_FORBIDDEN,
        409: {"description": f"The department has {MAX_ENDPOINTS_PER_DEPARTMENT} endpoints already"},
        422: {"description": "Invalid body, or a URL the policy refuses (not https, an internal address)"},
    },
)
async def create_webhook(
    session: SessionDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    worker: WorkerDep,
    response: Response,
    body: WebhookCreate,
) -> WebhookCreated:
    """Register an endpoint for a department. The answer holds the signing secret, shown this once."""
    department = body.department.value
    check_write(principal, department)
    url = await _checked_url(settings, body.url)
    if await queries.endpoint_count(session, department) >= MAX_ENDPOINTS_PER_DEPARTMENT:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"{department} has {MAX_ENDPOINTS_PER_DEPARTMENT} webhook endpoints already; delete one first",
        )
    now = utcnow()
    row = WebhookEndpointRow(
        department=department,
        url=url,
        secret=new_secret(),
        event_types=list(dict.fromkeys(body.event_types)),
        enabled=True,
        description=body.description,
        created_at=now,
        created_by=principal.name,
        updated_at=now,
    )
    session.add(row)
    await session.commit()
    worker.wake()
    response.headers["Location"] = f"/v1/webhooks/{row.id}"
    return from_row(WebhookCreated, row, previous_secret_expires_at=_old_secret_expiry(row))


@webhooks_api.get("", response_model=WebhookList, responses={403: {"description": "Department not readable"}})
async def list_webhooks(
    session: SessionDep, principal: PrincipalDep, department: Department | None = None
) -> WebhookList:
    """The endpoints of the departments this key may read (secrets are never shown again)."""
    if department is not None:
        check_read(principal, department.value)
    rows = await queries.endpoints_of(session, principal.readable, department.value if department else None)
    return WebhookList(items=[_public(r) for r in rows])


@webhooks_api.get("/{webhook_id}", response_model=WebhookPublic, responses=_NOT_FOUND)
async def get_webhook(session: SessionDep, principal: PrincipalDep, webhook_id: WebhookId) -> WebhookPublic:
    return _public(await _endpoint(session, principal, webhook_id, write=False))


@webhooks_api.patch(
    "/{webhook_id}",
    response_model=WebhookPublic,
    responses={**_NOT_FOUND, **_FORBIDDEN, 422: {"description": "Invalid body or refused URL"}},
)
async def update_webhook(
    session: SessionDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    worker: WorkerDep,
    webhook_id: WebhookId,
    body: WebhookUpdate,
) -> WebhookPublic:
    """Change the URL or the event types, or disable / re-enable the endpoint (send only what changes).
    While disabled it gets nothing: events routed meanwhile are not delivered later."""
    row = await _endpoint(session, principal, webhook_id, write=True)
    fields = body.model_fields_set
    if "url" in fields and body.url is not None:
        row.url = await _checked_url(settings, body.url)
    if "event_types" in fields and body.event_types is not None:
        row.event_types = list(dict.fromkeys(body.event_types))
    if "description" in fields and body.description is not None:
        row.description = body.description
    if "enabled" in fields and body.enabled is not None:
        row.enabled = body.enabled
        if body.enabled:
            row.disabled_reason = None
    row.updated_at = utcnow()
    await session.commit()
    if row.enabled:
        worker.wake()
    return _public(row)


@webhooks_api.delete(
    "/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT, responses={**_NOT_FOUND, **_FORBIDDEN}
)
async def delete_webhook(session: SessionDep, principal: PrincipalDep, webhook_id: WebhookId) -> Response:
    """Forget the endpoint and its delivery log."""
    await _endpoint(session, principal, webhook_id, write=True)
    await queries.delete_endpoint(session, webhook_id)
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@webhooks_api.post(
    "/{webhook_id}/rotate-secret", response_model=WebhookSecret, responses={**_NOT_FOUND, **_FORBIDDEN}
)
async def rotate_secret(
    session: SessionDep,
    principal: PrincipalDep,
    webhook_id: WebhookId,
    body: Annotated[SecretRotation | None, Body()] = None,
) -> WebhookSecret:
    """A new signing secret, shown this once. For `previous_valid_for_s` (a day unless given) requests
    carry two signatures, with the new and the old secret, so the receiver can switch at its own pace."""
    row = await _endpoint(session, principal, webhook_id, write=True)
    keep = (body or SecretRotation()).previous_valid_for_s
    now = utcnow()
    row.previous_secret = row.secret if keep > 0 else None
    row.previous_secret_expires_at = now + timedelta(seconds=keep) if keep > 0 else None
    row.secret = new_secret()
    row.updated_at = now
    await session.commit()
    return WebhookSecret(
        id=row.id, secret=row.secret, previous_secret_expires_at=row.previous_secret_expires_at
    )


@webhooks_api.get(
    "/{webhook_id}/deliveries",
    response_model=DeliveryPage,
    responses={**_NOT_FOUND, 422: {"description": "Invalid cursor or parameter"}},
)
async def list_deliveries(
    session: SessionDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    webhook_id: WebhookId,
    delivery_status: Annotated[DeliveryStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=20, description="From the previous page.")] = None,
) -> DeliveryPage:
    """The delivery log, newest first: each event's attempts, last answer, last error, next attempt."""
    endpoint = await _endpoint(session, principal, webhook_id, write=False)
    limit = min(limit, settings.api_page_size_max)
    if cursor is not None and not cursor.isdigit():
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "invalid cursor")
    rows = await queries.deliveries(
        session,
        endpoint.id,
        status=delivery_status,
        before_id=int(cursor) if cursor is not None else None,
        limit=limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return DeliveryPage(
        items=[DeliveryPublic.model_validate(r) for r in rows],
        next_cursor=str(rows[-1].id) if more and rows else None,
    )


@webhooks_api.get(
    "/{webhook_id}/deliveries/{delivery_id}", response_model=DeliveryDetail, responses=_NOT_FOUND
)
async def get_delivery(
    session: SessionDep, principal: PrincipalDep, webhook_id: WebhookId, delivery_id: DeliveryId
) -> DeliveryDetail:
    """One delivery with the body that is POSTed."""
    endpoint = await _endpoint(session, principal, webhook_id, write=False)
    row = await _delivery(session, endpoint, delivery_id)
    try:
        payload: Any = orjson.loads(row.payload)
    except orjson.JSONDecodeError:
        payload = row.payload.decode("utf-8", "replace")
    return from_row(DeliveryDetail, row, payload=payload)


@webhooks_api.post(
    "/{webhook_id}/deliveries/{delivery_id}/retry",
    response_model=DeliveryPublic,
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        **_NOT_FOUND,
        **_FORBIDDEN,
        409: {"description": "The delivery is not dead, or the endpoint is disabled"},
    },
)
async def retry_delivery(
    session: SessionDep,
    principal: PrincipalDep,
    worker: WorkerDep,
    webhook_id: WebhookId,
    delivery_id: DeliveryId,
) -> DeliveryPublic:
    """Send a dead delivery again, now. If that attempt fails too and the delivery has no attempts left,
    it is dead again."""
    endpoint = await _endpoint(session, principal, webhook_id, write=True)
    row = await _delivery(session, endpoint, delivery_id)
    if row.status != "dead":
        raise HTTPException(status.HTTP_409_CONFLICT, f"delivery {delivery_id} is {row.status}, not dead")
    if not endpoint.enabled:
        raise HTTPException(status.HTTP_409_CONFLICT, f"webhook {webhook_id} is disabled; enable it first")
    row.status = "retrying"
    row.next_attempt_at = utcnow()
    await session.commit()
    worker.wake()
    return DeliveryPublic.model_validate(row)


@webhooks_api.post(
    "/{webhook_id}/test", response_model=DeliveryPublic, responses={**_NOT_FOUND, **_FORBIDDEN}
)
async def test_webhook(
    session: SessionDep, principal: PrincipalDep, worker: WorkerDep, webhook_id: WebhookId
) -> DeliveryPublic:
    """Send a signed `ping` event to the endpoint now (enabled or not), once, and answer with the result
    as the delivery log records it (`delivered`, or `dead` with the status code or error)."""
    endpoint = await _endpoint(session, principal, webhook_id, write=True)
    delivery_id = await worker.ping(endpoint)
    session.expire_all()
    row = await session.get(WebhookDeliveryRow, delivery_id)
    if row is None:  # the endpoint was deleted meanwhile
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"webhook {webhook_id} not found")
    return DeliveryPublic.model_validate(row)
