"""What a list of mentions selects and in which order: `Filters` and `Sort`, read from the query string by
`GET /v1/mentions` and `GET /v1/mentions/export` alike (`FiltersDep`). The SQL they become is
services/api/queries/mentions.py."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, Query
from pydantic import BaseModel

from services.api.inputs import UtcDatetime
from shared.events import Department, Intent, MentionKind, Priority, Sentiment
from shared.workflow import Status


class Sort(StrEnum):
    ROUTED_DESC = "-routed_at"
    ROUTED_ASC = "routed_at"
    PUBLISHED_DESC = "-published_at"
    PUBLISHED_ASC = "published_at"
    URGENCY_DESC = "-urgency"
    SCORE_ASC = "sentiment_score"


class Filters(BaseModel):
    """What `GET /v1/mentions` and its export select."""

    department: list[Department] = []
    status: list[Status] = []
    priority: list[Priority] = []
    overdue: bool | None = None
    assignee: str | None = None
    kind: MentionKind | None = None
    topic: list[str] = []
    sentiment: Sentiment | None = None
    intent: Intent | None = None
    language: str | None = None
    source: str | None = None
    author: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    q: str | None = None


async def read_filters(
    department: Annotated[list[Department] | None, Query(description="Repeat for several.")] = None,
    status_: Annotated[list[Status] | None, Query(alias="status", description="Assignment status.")] = None,
    priority: Annotated[list[Priority] | None, Query()] = None,
    overdue: Annotated[bool | None, Query(description="Past the SLA without a first response.")] = None,
    assignee: Annotated[str | None, Query(max_length=200)] = None,
    kind: MentionKind | None = None,
    topic: Annotated[list[str] | None, Query(max_length=64)] = None,
    sentiment: Sentiment | None = None,
    intent: Intent | None = None,
    language: Annotated[str | None, Query(min_length=2, max_length=8)] = None,
    source: Annotated[str | None, Query(max_length=64, description="A source id.")] = None,
    author: Annotated[str | None, Query(max_length=300, description="Exact author name, any case.")] = None,
    since: Annotated[
        UtcDatetime | None, Query(description="Routed at or after (RFC 3339, with a zone).")
    ] = None,
    until: Annotated[UtcDatetime | None, Query(description="Routed before (RFC 3339, with a zone).")] = None,
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=500,
            description='Full text over title and text: words, "phrases", OR, -exclusions '
            "(PostgreSQL full-text search; SQLite matches every word as a substring).",
        ),
    ] = None,
) -> Filters:
    """The filters of the query string (a FastAPI dependency: each is a documented query parameter)."""
    return Filters(
        department=department or [],
        status=status_ or [],
        priority=priority or [],
        overdue=overdue,
        assignee=assignee,
        kind=kind,
        topic=topic or [],
        sentiment=sentiment,
        intent=intent,
        language=language,
        source=source,
        author=author,
        since=since,
        until=until,
        q=q,
    )


FiltersDep = Annotated[Filters, Depends(read_filters)]
