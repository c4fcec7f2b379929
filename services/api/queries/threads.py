"""The SQL of a mention's relatives (services/api/threads.py): its thread and its near-duplicates, each
as the brief fields of MentionBrief with the departments of the key it is routed to.

Both read through indexes (migration 0010: `mentions.url` and `mentions.in_reply_to`; `duplicate_of`
had one): the cost is the thread's size, bounded by `limit`, never the table's.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Select, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.apikeys import Principal
from shared.db import AssignmentRow, MentionRow
from shared.settings import DEPARTMENTS

# Characters of a relative's text shown (a thread is read at a glance; the mention itself has the rest).
EXCERPT_CHARS = 280

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


def _oldest_first(query: Select[Any], limit: int) -> Select[Any]:
    return query.order_by(MentionRow.published_at, MentionRow.id).limit(limit + 1)


async def _briefs(session: AsyncSession, principal: Principal, query: Select[Any]) -> list[dict[str, Any]]:
    """The rows of `query` over _BRIEF_COLUMNS, each with the departments of the key it is routed to."""
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
        {**dict(r), "departments": sorted(departments[r["id"]], key=lambda d: order.get(d, 99))} for r in rows
    ]


async def parent_post(
    session: AsyncSession, principal: Principal, mention: MentionRow
) -> dict[str, Any] | None:
    """The post the comment `mention` answers, when it is stored and the key may see it (of several
    copies of it, the routed one first, then the earliest)."""
    posts = (
        select(*_BRIEF_COLUMNS)
        .where(
            MentionRow.url == mention.in_reply_to,
            MentionRow.id != mention.id,
            *_routed_to_readable(principal),
        )
        .order_by(MentionRow.duplicate_of.is_not(None), MentionRow.routed_at, MentionRow.id)
        .limit(1)
    )
    found = await _briefs(session, principal, posts)
    return found[0] if found else None


async def answering(
    session: AsyncSession, principal: Principal, url: str, mention_id: str, limit: int
) -> list[dict[str, Any]]:
    """Up to `limit` + 1 mentions answering `url` (but `mention_id`) that the key may see, oldest first."""
    others = select(*_BRIEF_COLUMNS).where(
        MentionRow.in_reply_to == url, MentionRow.id != mention_id, *_routed_to_readable(principal)
    )
    return await _briefs(session, principal, _oldest_first(others, limit))


async def original(session: AsyncSession, principal: Principal, mention_id: str) -> dict[str, Any] | None:
    """The mention `mention_id`, when the key may see it."""
    query = select(*_BRIEF_COLUMNS).where(MentionRow.id == mention_id, *_routed_to_readable(principal))
    found = await _briefs(session, principal, query)
    return found[0] if found else None


async def copies(
    session: AsyncSession, principal: Principal, root: str, mention_id: str, limit: int
) -> list[dict[str, Any]]:
    """Up to `limit` + 1 stored copies of `root` (but `mention_id`) that the key may see, oldest first."""
    query = select(*_BRIEF_COLUMNS).where(
        MentionRow.duplicate_of == root, MentionRow.id != mention_id, *_copies_visible(principal)
    )
    return await _briefs(session, principal, _oldest_first(query, limit))
