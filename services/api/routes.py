"""Routes of the REST API (v1)."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status
from sqlalchemy import and_, exists, func, or_, select, text

from services.api.assignments import assignment_public
from services.api.deps import SessionDep, SettingsDep
from services.api.schemas import (
    AssignmentPublic,
    Health,
    MentionPage,
    MentionPublic,
    QueueCounts,
    Queues,
)
from shared.db import AssignmentRow, MentionRow, MentionTopicRow
from shared.events import Department, Sentiment, utcnow
from shared.settings import DEPARTMENTS

router = APIRouter()
v1 = APIRouter(prefix="/v1")


@router.get("/healthz", response_model=Health, tags=["health"])
async def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, tags=["health"], responses={503: {"model": Health}})
async def readyz(session: SessionDep, response: Response) -> Health:
    """The database answers."""
    try:
        await session.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure here means "not ready", reported as such
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return Health(status="unavailable", checks={"database": type(exc).__name__})
    return Health(status="ok", checks={"database": "ok"})


def _encode_cursor(routed_at: datetime, mention_id: str) -> str:
    raw = json.dumps([routed_at.isoformat(), mention_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        when, mention_id = json.loads(raw)
        return datetime.fromisoformat(when), str(mention_id)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "invalid cursor") from exc


async def _assignments(session: SessionDep, ids: list[str]) -> dict[str, list[AssignmentPublic]]:
    out: dict[str, list[AssignmentPublic]] = {i: [] for i in ids}
    if not ids:
        return out
    rows = await session.scalars(
        select(AssignmentRow).where(AssignmentRow.mention_id.in_(ids)).order_by(AssignmentRow.priority)
    )
    now = utcnow()
    for a in rows:
        out[a.mention_id].append(assignment_public(a, now))
    return out


def _mention_public(m: MentionRow, assignments: list[AssignmentPublic]) -> MentionPublic:
    return MentionPublic(
        id=m.id,
        source_id=m.source_id,
        source_name=m.source_name,
        kind=m.kind,
        url=m.url,
        title=m.title,
        text=m.text,
        author=m.author,
        published_at=m.published_at,
        in_reply_to=m.in_reply_to,
        ingested_at=m.ingested_at,
        routed_at=m.routed_at,
        sentiment=m.sentiment,
        sentiment_score=m.sentiment_score,
        language=m.language,
        topics=list(m.topics),
        classification=dict(m.classification),
        assignments=assignments,
    )


@v1.get("/mentions", response_model=MentionPage, tags=["mentions"])
async def list_mentions(
    session: SessionDep,
    settings: SettingsDep,
    department: Department | None = None,
    topic: Annotated[str | None, Query(max_length=64)] = None,
    sentiment: Sentiment | None = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> MentionPage:
    """Routed mentions, newest first, filtered; keyset pagination with `cursor`."""
    limit = min(limit, settings.api_page_size_max)
    query = select(MentionRow)
    if department is not None:
        query = query.where(
            exists().where(
                and_(AssignmentRow.mention_id == MentionRow.id, AssignmentRow.department == department.value)
            )
        )
    if topic is not None:
        query = query.where(
            exists().where(and_(MentionTopicRow.mention_id == MentionRow.id, MentionTopicRow.topic == topic))
        )
    if sentiment is not None:
        query = query.where(MentionRow.sentiment == sentiment.value)
    if cursor is not None:
        at, after_id = _decode_cursor(cursor)
        query = query.where(
            or_(MentionRow.routed_at < at, and_(MentionRow.routed_at == at, MentionRow.id < after_id))
        )
    query = query.order_by(MentionRow.routed_at.desc(), MentionRow.id.desc()).limit(limit + 1)
    rows = list((await session.scalars(query)).all())
    more = len(rows) > limit
    rows = rows[:limit]
    assignments = await _assignments(session, [m.id for m in rows])
    return MentionPage(
        items=[_mention_public(m, assignments[m.id]) for m in rows],
        next_cursor=_encode_cursor(rows[-1].routed_at, rows[-1].id) if more and rows else None,
    )


@v1.get(
    "/mentions/{mention_id}",
    response_model=MentionPublic,
    tags=["mentions"],
    responses={404: {"description": "No such mention"}},
)
async def get_mention(session: SessionDep, mention_id: str) -> MentionPublic:
    """One mention with its classification, evidence and assignments."""
    mention = await session.get(MentionRow, mention_id)
    if mention is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"mention {mention_id!r} not found")
    assignments = await _assignments(session, [mention.id])
    return _mention_public(mention, assignments[mention.id])


@v1.get("/queues", response_model=Queues, tags=["queues"])
async def queues(session: SessionDep) -> Queues:
    """Assignment counts per department and status."""
    rows = await session.execute(
        select(AssignmentRow.department, AssignmentRow.status, func.count()).group_by(
            AssignmentRow.department, AssignmentRow.status
        )
    )
    counts: dict[str, dict[str, int]] = {d: {} for d in DEPARTMENTS}
    for department, state, n in rows:
        counts.setdefault(department, {})[state] = int(n)
    return Queues(
        departments=[
            QueueCounts(department=d, total=sum(by.values()), by_status=by) for d, by in counts.items()
        ]
    )
