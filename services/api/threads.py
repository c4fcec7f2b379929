"""A mention's relatives: its thread (the post a comment answers, the other comments on it, the comments
answering it) and its near-duplicates (the same text stored again from elsewhere, linked, not routed).

The desk shows both beside a mention; any tool may read them. What a key sees follows the mention's own
rule: the mention must be visible to the key (404 otherwise). In its thread a key of some departments sees
only the mentions routed to one of them. A near-duplicate is an unrouted copy of the mention: whoever sees
the mention sees its copies (and no copy that was routed to a department outside the key's).

Both read through indexes (migration 0010: `mentions.url` and `mentions.in_reply_to`; `duplicate_of`
had one): the cost is the thread's size, bounded by `limit`, never the table's.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, Select, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.auth import PrincipalDep
from services.api.deps import SessionDep
from shared.apikeys import Principal
from shared.db import AssignmentRow, MentionRow
from shared.settings import DEPARTMENTS

threads_api = APIRouter(prefix="/v1", tags=["mentions"])

# Characters of a relative's text shown (a thread is read at a glance; the mention itself has the rest).
EXCERPT_CHARS = 280

Limit = Annotated[int, Query(ge=1, le=200, description="At most this many mentions per list.")]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such mention"}}


class MentionBrief(BaseModel):
    """A related mention at a glance; GET /v1/mentions/{id} has the rest (when the key may see it)."""

    id: str
    source_id: str
    source_name: str
    kind: str
    url: str
    title: str
    excerpt: str = Field(description=f"The first {EXCERPT_CHARS} characters of its text.")
    author: str
    published_at: datetime
    routed_at: datetime
    sentiment: str
    in_reply_to: str | None
    duplicate_of: str | None
    departments: list[str] = Field(description="Its assignments' departments, those the key may read.")


class Thread(BaseModel):
    mention_id: str
    parent: MentionBrief | None = Field(
        description="For a comment: the post it answers, when it is stored and the key may see it."
    )
    siblings: list[MentionBrief] = Field(description="The other comments on the same post, oldest first.")
    replies: list[MentionBrief] = Field(description="Comments answering this mention, oldest first.")
    truncated: bool = Field(description="There are more siblings or replies than `limit`.")


class NearDuplicates(BaseModel):
    mention_id: str
    original: MentionBrief | None = Field(
        description="The earlier mention this one repeats (null when this one is the original)."
    )
    duplicates: list[MentionBrief] = Field(
        description="The other stored copies of the original (or of this mention), oldest first."
    )
    truncated: bool = Field(description="There are more copies than `limit`.")


_BRIEF_COLUMNS = [
    MentionRow.id,
    MentionRow.source_id,
    MentionRow.source_name,
    MentionRow.kind,
    MentionRow.url,
    MentionRow.title,
    func.substr(MentionRow.text, 1, EXCERPT_CHARS).label("excerpt"),
    MentionRow.author,
    MentionRow.published_at,
    MentionRow.routed_at,
    MentionRow.sentiment,
    MentionRow.in_reply_to,
    MentionRow.duplicate_of,
]


def _routed_to_readable(principal: Principal) -> list[ColumnElement[bool]]:
    """Mentions the key may open: routed to one of its departments (every mention for a key of all)."""
    if principal.all_departments:
        return []
    return [
        exists().where(
            AssignmentRow.mention_id == MentionRow.id,
            AssignmentRow.department.in_(sorted(principal.readable)),
        )
    ]


def _copies_visible(principal: Principal) -> list[ColumnElement[bool]]:
    """Copies the key may see: any but one routed to a department outside the key's."""
    if principal.all_departments:
        return []
    outside = [d for d in DEPARTMENTS if d not in principal.readable]
    return [~exists().where(AssignmentRow.mention_id == MentionRow.id, AssignmentRow.department.in_(outside))]


async def _mention(session: AsyncSession, principal: Principal, mention_id: str) -> MentionRow:
    """The mention, if the key may see it (404 otherwise: another department's mention does not exist)."""
    row = await session.scalar(
        select(MentionRow).where(MentionRow.id == mention_id, *_routed_to_readable(principal))
    )
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"mention {mention_id!r} not found")
    return row


def _oldest_first(query: Select[Any], limit: int) -> Select[Any]:
    return query.order_by(MentionRow.published_at, MentionRow.id).limit(limit + 1)


async def _briefs(session: AsyncSession, principal: Principal, query: Select[Any]) -> list[MentionBrief]:
    rows = [row._mapping for row in await session.execute(query)]
    departments: dict[str, list[str]] = {r["id"]: [] for r in rows}
    if rows:
        assigned = select(AssignmentRow.mention_id, AssignmentRow.department).where(
            AssignmentRow.mention_id.in_(list(departments)),
            AssignmentRow.department.in_(sorted(principal.readable)),
        )
        for mention_id, department in await session.execute(assigned):
            departments[mention_id].append(department)
    order = {d: i for i, d in enumerate(DEPARTMENTS)}
    return [
        MentionBrief(**dict(r), departments=sorted(departments[r["id"]], key=lambda d: order.get(d, 99)))
        for r in rows
    ]


def _cut(items: Sequence[MentionBrief], limit: int) -> tuple[list[MentionBrief], bool]:
    return list(items[:limit]), len(items) > limit


@threads_api.get("/mentions/{mention_id}/thread", response_model=Thread, responses=_NOT_FOUND)
async def thread(session: SessionDep, principal: PrincipalDep, mention_id: str, limit: Limit = 50) -> Thread:
    """The conversation around a mention: for a comment the post it answers and the other comments on
    that post; for any mention the comments that answer it. Only mentions the key may see."""
    mention = await _mention(session, principal, mention_id)
    visible = _routed_to_readable(principal)
    parent: MentionBrief | None = None
    siblings: list[MentionBrief] = []
    truncated = False
    if mention.in_reply_to:
        posts = (
            select(*_BRIEF_COLUMNS)
            .where(MentionRow.url == mention.in_reply_to, MentionRow.id != mention.id, *visible)
            .order_by(MentionRow.duplicate_of.is_not(None), MentionRow.routed_at, MentionRow.id)
            .limit(1)
        )
        found = await _briefs(session, principal, posts)
        parent = found[0] if found else None
        others = select(*_BRIEF_COLUMNS).where(
            MentionRow.in_reply_to == mention.in_reply_to, MentionRow.id != mention.id, *visible
        )
        siblings, truncated = _cut(await _briefs(session, principal, _oldest_first(others, limit)), limit)
    replies: list[MentionBrief] = []
    if mention.url:
        answers = select(*_BRIEF_COLUMNS).where(
            MentionRow.in_reply_to == mention.url, MentionRow.id != mention.id, *visible
        )
        replies, more = _cut(await _briefs(session, principal, _oldest_first(answers, limit)), limit)
        truncated = truncated or more
    return Thread(
        mention_id=mention.id, parent=parent, siblings=siblings, replies=replies, truncated=truncated
    )


@threads_api.get(
    "/mentions/{mention_id}/near-duplicates", response_model=NearDuplicates, responses=_NOT_FOUND
)
async def near_duplicates(
    session: SessionDep, principal: PrincipalDep, mention_id: str, limit: Limit = 50
) -> NearDuplicates:
    """The same text stored again from elsewhere (syndicated, quoted whole): the original this mention
    repeats, and the other copies of it. Copies are linked to their original and not routed."""
    mention = await _mention(session, principal, mention_id)
    original: MentionBrief | None = None
    root = mention.duplicate_of or mention.id
    if mention.duplicate_of:
        found = await _briefs(
            session,
            principal,
            select(*_BRIEF_COLUMNS).where(MentionRow.id == root, *_routed_to_readable(principal)),
        )
        original = found[0] if found else None
    copies = select(*_BRIEF_COLUMNS).where(
        MentionRow.duplicate_of == root, MentionRow.id != mention.id, *_copies_visible(principal)
    )
    duplicates, truncated = _cut(await _briefs(session, principal, _oldest_first(copies, limit)), limit)
    return NearDuplicates(
        mention_id=mention.id, original=original, duplicates=duplicates, truncated=truncated
    )
