"""The door for posts pushed in from elsewhere: `POST /v1/mentions` publishes them to `mentions.raw`."""

from __future__ import annotations

import hashlib
import re
from typing import Annotated

import orjson
from fastapi import APIRouter, Body, Header, HTTPException, Response, status
from sqlalchemy.exc import IntegrityError

from services.api.auth import PushDep
from services.api.deps import BusDep, SessionDep, SettingsDep
from services.api.schemas import MentionPush, PushAccepted
from shared.bus.codec import encode
from shared.canonical import canonical_url
from shared.db import IdempotencyKeyRow
from shared.errors import is_transient
from shared.events import Mention, MentionIngested, MentionKind, utcnow
from shared.intake import new_mention

push = APIRouter(prefix="/v1", tags=["mentions"])

MAX_BATCH = 1_000
_CE_SOURCE = "/mention-router/api"
_SLUG = re.compile(r"[^a-z0-9._-]+")


def push_source_id(label: str) -> str:
    """The source id of pushed mentions with this `source` label (stable: it is part of the mention id)."""
    return "push-" + _SLUG.sub("-", label.lower())[:59]


def _mention(item: MentionPush) -> Mention:
    source_id = push_source_id(item.source)
    url = canonical_url(str(item.url))
    return new_mention(
        source_id=source_id,
        source_name=item.source,
        entry_key=item.external_id or url,
        kind=MentionKind(item.kind),
        url=url,
        title=item.title,
        text=item.text,
        author=item.author,
        published_at=item.published_at,
        now=utcnow(),
        in_reply_to=canonical_url(str(item.in_reply_to)) if item.in_reply_to else None,
        language=item.language,
        influence=item.influence,
    )


@push.post(
    "/mentions",
    response_model=PushAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        422: {
            "description": "Invalid mention(s), too many, or an Idempotency-Key reused for another request"
        },
        503: {"description": "The message broker is unavailable; nothing was published"},
    },
)
async def push_mentions(
    pusher: PushDep,
    session: SessionDep,
    settings: SettingsDep,
    bus: BusDep,
    response: Response,
    body: Annotated[MentionPush | list[MentionPush], Body()],
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> PushAccepted:
    """Accept one mention or a JSON array of up to 1,000, and publish them for classification and routing.

    With an `Idempotency-Key` header, a retried request (same key, same body) publishes nothing again
    and gets the first answer back, marked `Idempotency-Replayed: true`. An Idempotency-Key belongs to
    the API key that sent it: another API key's same Idempotency-Key is a request of its own."""
    items = body if isinstance(body, list) else [body]
    if not items:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "the array is empty")
    if len(items) > MAX_BATCH:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"at most {MAX_BATCH} mentions per request"
        )
    request_hash = hashlib.sha256(
        orjson.dumps([i.model_dump(mode="json") for i in items], option=orjson.OPT_SORT_KEYS)
    ).hexdigest()
    # "" without keys (MR_API_AUTH=false): every caller is the one anonymous admin then.
    scope = pusher.key_id or ""
    if idempotency_key is not None:
        previous = await session.get(IdempotencyKeyRow, (scope, idempotency_key))
        if previous is not None:
            if previous.request_hash != request_hash:
                raise HTTPException(
                    status.HTTP_422_UNPROCESSABLE_CONTENT,
                    "this Idempotency-Key was used for a different request",
                )
            response.headers["Idempotency-Replayed"] = "true"
            response.status_code = previous.status_code
            return PushAccepted.model_validate(previous.response)
    mentions = [_mention(i) for i in items]
    topic = settings.topic_raw
    # Returns once the broker acknowledged every message; only then is the request accepted.
    try:
        await bus.send(
            [
                encode(topic=topic, key=m.id, event=MentionIngested(mention=m), source=_CE_SOURCE)
                for m in mentions
            ]
        )
    except Exception as exc:
        if not is_transient(exc):
            raise
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "the message broker did not acknowledge; retry the request"
        ) from exc
    accepted = PushAccepted(accepted=len(mentions), ids=[m.id for m in mentions])
    if idempotency_key is not None:
        session.add(
            IdempotencyKeyRow(
                api_key_id=scope,
                key=idempotency_key,
                request_hash=request_hash,
                status_code=status.HTTP_202_ACCEPTED,
                response=accepted.model_dump(mode="json"),
                created_at=utcnow(),
            )
        )
        try:
            await session.commit()
        except IntegrityError:
            # A concurrent retry stored it first; both published the same mention ids, which the
            # pipeline absorbs (every consumer is idempotent on the id).
            await session.rollback()
    return accepted
