"""`POST /v1/mentions/{id}/corrections`: a department corrects a mention's labels; the corrections are
recorded for training (`mention-router train`) and shown in the mention's detail, each to the keys of
the departments it was made for."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, status
from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.auth import PrincipalDep
from services.api.deps import ActorDep, SessionDep, SettingsDep
from services.api.inputs import LAX, RequestModel
from services.api.queries import mentions as queries
from services.api.schemas import ActingKey, RowModel, from_row
from shared.apikeys import Principal
from shared.db import CorrectionRow, MentionRow
from shared.events import Intent, Sentiment, utcnow

corrections_api = APIRouter(prefix="/v1", tags=["mentions"])


class CorrectionPublic(RowModel):
    id: int
    field: str
    value: Any = Field(description="For `departments`: only those the key may read.")
    previous: Any
    actor: str = Field(description="Display name: X-Actor, else the key's name.")
    actor_key: ActingKey | None = Field(description="The API key that made it; null for older records.")
    created_at: datetime


def correction_public(c: CorrectionRow, principal: Principal) -> CorrectionPublic | None:
    """The correction as `principal` may see it; None when it was made for none of its departments. A
    change of departments names only those the key may read (the others' routing is not its business)."""
    value, previous = c.value, c.previous
    if not principal.all_departments:
        readable = principal.readable
        if c.departments is None or not readable.intersection(c.departments):
            return None
        if c.field == "departments":
            value = [d for d in value if d in readable] if isinstance(value, list) else value
            previous = [d for d in previous if d in readable] if isinstance(previous, list) else previous
    return from_row(CorrectionPublic, c, value=value, previous=previous)


class LabelCorrection(RequestModel):
    """A department's correction of a label; recorded for training (`mention-router train`) and applied to
    the mention's labels (the classifier's own output stays in `classification`)."""

    sentiment: Annotated[Sentiment, LAX] | None = None
    intent: Annotated[Intent, LAX] | None = None
    topics: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        default=None, max_length=20
    )


@corrections_api.post(
    "/mentions/{mention_id}/corrections",
    response_model=list[CorrectionPublic],
    status_code=status.HTTP_201_CREATED,
    responses={403: {"description": "Read-only key"}, 404: {"description": "No such mention"}},
)
async def correct_labels(
    session: SessionDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    actor: ActorDep,
    mention_id: str,
    body: LabelCorrection,
) -> list[CorrectionPublic]:
    """Correct the mention's sentiment, intent or topics. Needs write access to one of its departments."""
    mention = await queries.visible_mention(session, principal, mention_id)
    departments = await queries.departments_of(session, mention.id)
    if not principal.is_admin and not departments & principal.writable:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this key may not change this mention's labels")
    changes = await _apply(session, mention, body, settings.taxonomy_file)
    if not changes:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "give sentiment, intent or topics")
    now = utcnow()
    # Made for the departments of the mention the key may change: the ones that see it.
    made_for = sorted(departments & principal.writable)
    rows = [
        CorrectionRow(
            mention_id=mention.id,
            field=field,
            value=value,
            previous=previous,
            actor=actor.name,
            actor_key_id=actor.key_id,
            actor_key_name=actor.key_name,
            departments=made_for,
            created_at=now,
        )
        for field, value, previous in changes
    ]
    session.add_all(rows)
    await session.flush()
    out = [c for c in (correction_public(r, principal) for r in rows) if c is not None]
    await session.commit()
    return out


async def _apply(
    session: AsyncSession, mention: MentionRow, body: LabelCorrection, taxonomy_file: Path
) -> list[tuple[str, Any, Any]]:
    """Apply the corrections to the mention; (field, value, previous) of each (422 for an unknown topic)."""
    changes: list[tuple[str, Any, Any]] = []
    if body.sentiment is not None:
        changes.append(("sentiment", body.sentiment.value, mention.sentiment))
        mention.sentiment = body.sentiment.value
    if body.intent is not None:
        changes.append(("intent", body.intent.value, mention.intent))
        mention.intent = body.intent.value
    if body.topics is not None:
        unknown = sorted(set(body.topics) - _known_topics(taxonomy_file))
        if unknown:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"unknown topic(s) {unknown}")
        topics = sorted(set(body.topics))
        changes.append(("topics", topics, list(mention.topics)))
        await queries.replace_topics(session, mention, topics)
    return changes


def _known_topics(path: Path) -> set[str]:
    from shared.classify import Taxonomy

    return set(Taxonomy.from_file(path).topics)
