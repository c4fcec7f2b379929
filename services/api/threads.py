"""A mention's relatives: its thread (the post a comment answers, the other comments on it, the comments
answering it) and its near-duplicates (the same text stored again from elsewhere, linked, not routed).

The desk shows both beside a mention; any tool may read them. What a key sees follows the mention's own
rule: the mention must be visible to the key (404 otherwise). In its thread a key of some departments sees
only the mentions routed to one of them. A near-duplicate is an unrouted copy of the mention: whoever sees
the mention sees its copies (and no copy that was routed to a department outside the key's).

The SQL, and what it costs, is services/api/queries/threads.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from services.api.auth import PrincipalDep
from services.api.deps import SessionDep
from services.api.queries import mentions as mention_queries
from services.api.queries import threads as queries
from services.api.queries.threads import EXCERPT_CHARS

threads_api = APIRouter(prefix="/v1", tags=["mentions"])

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


def _cut(rows: Sequence[dict[str, Any]], limit: int) -> tuple[list[MentionBrief], bool]:
    """The first `limit` of the rows read (`limit` + 1), and whether there were more."""
    return [MentionBrief(**r) for r in rows[:limit]], len(rows) > limit


@threads_api.get("/mentions/{mention_id}/thread", response_model=Thread, responses=_NOT_FOUND)
async def thread(session: SessionDep, principal: PrincipalDep, mention_id: str, limit: Limit = 50) -> Thread:
    """The conversation around a mention: for a comment the post it answers and the other comments on
    that post; for any mention the comments that answer it. Only mentions the key may see."""
    mention = await mention_queries.visible_mention(session, principal, mention_id)
    parent: MentionBrief | None = None
    siblings: list[MentionBrief] = []
    truncated = False
    if mention.in_reply_to:
        post = await queries.parent_post(session, principal, mention)
        parent = MentionBrief(**post) if post is not None else None
        others = await queries.answering(session, principal, mention.in_reply_to, mention.id, limit)
        siblings, truncated = _cut(others, limit)
    replies: list[MentionBrief] = []
    if mention.url:
        answers = await queries.answering(session, principal, mention.url, mention.id, limit)
        replies, more = _cut(answers, limit)
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
    mention = await mention_queries.visible_mention(session, principal, mention_id)
    original: MentionBrief | None = None
    root = mention.duplicate_of or mention.id
    if mention.duplicate_of:
        found = await queries.original(session, principal, root)
        original = MentionBrief(**found) if found is not None else None
    copies = await queries.copies(session, principal, root, mention.id, limit)
    duplicates, truncated = _cut(copies, limit)
    return NearDuplicates(
        mention_id=mention.id, original=original, duplicates=duplicates, truncated=truncated
    )
