"""Mentions and queues for the departments' tools: filtered, sorted, paged by cursor, exported, corrected.

Every query is restricted to the caller's departments in SQL: a mention is visible when it has an
assignment in a department the key may read (admins also see unrouted near-duplicates), and only those
assignments are shown.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import csv
import io
import json
import logging
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import (
    ColumnElement,
    Select,
    Text,
    and_,
    bindparam,
    cast,
    exists,
    func,
    literal,
    literal_column,
    select,
    text,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.api.assignments import ActivityPublic, ReplyPublic, activity_public, reply_public
from services.api.auth import PrincipalDep, check_read
from services.api.deps import ActorDep, SessionDep, SettingsDep
from services.api.inputs import LAX, RequestModel, UtcDatetime, parse_datetime
from services.api.schemas import ActingKey, AssignmentPublic, MentionPage, MentionPublic, acting_key
from shared.apikeys import Principal
from shared.db import (
    ActivityRow,
    AssignmentCountRow,
    AssignmentRow,
    CorrectionRow,
    MentionRow,
    MentionTopicRow,
    ReplyRow,
)
from shared.db.models import AWAITING_STATUSES, OPEN_STATUSES
from shared.events import Department, Intent, MentionKind, Priority, Sentiment, utcnow
from shared.settings import DEPARTMENTS
from shared.textsafe import unstorable
from shared.workflow import AWAITING_RESPONSE, OPEN, Status

mentions_api = APIRouter(prefix="/v1", tags=["mentions"])
log = logging.getLogger(__name__)

# The document of PostgreSQL's full-text search: `mentions.search`, the stored tsvector of title and text
# with the GIN index ix_mentions_search (migration 0007; `simple`: no stemming, mentions come in many
# languages). Stored, so that a list walking the newest mentions tests each one's vector instead of
# computing it again (0.1 ms a mention).
FTS_DOCUMENT = "mentions.search"


class Sort(StrEnum):
    ROUTED_DESC = "-routed_at"
    ROUTED_ASC = "routed_at"
    PUBLISHED_DESC = "-published_at"
    PUBLISHED_ASC = "published_at"
    URGENCY_DESC = "-urgency"
    SCORE_ASC = "sentiment_score"


_SORT_COLUMNS = {
    "routed_at": MentionRow.routed_at,
    "published_at": MentionRow.published_at,
    "urgency": MentionRow.urgency,
    "sentiment_score": MentionRow.sentiment_score,
}


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


def _filters(
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


FiltersDep = Annotated[Filters, Depends(_filters)]


def _departments(principal: Principal, wanted: Sequence[Department]) -> list[str]:
    """The departments a query looks at: the ones asked for (each must be readable: else 403), or all
    the caller may read."""
    for d in wanted:
        check_read(principal, d.value)
    return [d.value for d in wanted] if wanted else sorted(principal.readable)


def _assignment_filters(f: Filters, now: datetime) -> list[ColumnElement[bool]]:
    """The filters on an assignment's own fields (one assignment must match all of them)."""
    conditions: list[ColumnElement[bool]] = []
    if f.status:
        conditions.append(AssignmentRow.status.in_([s.value for s in f.status]))
    if f.priority:
        conditions.append(AssignmentRow.priority.in_([p.value for p in f.priority]))
    if f.assignee is not None:
        conditions.append(AssignmentRow.assignee == f.assignee)
    if f.overdue is not None:
        # The statuses as literals, so that PostgreSQL can use the partial index over them
        # (ix_assignments_awaiting_routed) in every plan.
        late = and_(
            AssignmentRow.status.in_(
                bindparam("awaiting", AWAITING_STATUSES, expanding=True, literal_execute=True)
            ),
            AssignmentRow.sla_due_at < now,
        )
        conditions.append(late if f.overdue else ~late)
    return conditions


def _mention_filters(session: AsyncSession, f: Filters) -> list[ColumnElement[bool]]:
    """The filters on the mention itself."""
    conditions: list[ColumnElement[bool]] = []
    for topic in f.topic:
        conditions.append(
            exists().where(MentionTopicRow.mention_id == MentionRow.id, MentionTopicRow.topic == topic)
        )
    if f.kind is not None:
        conditions.append(MentionRow.kind == f.kind.value)
    if f.sentiment is not None:
        conditions.append(MentionRow.sentiment == f.sentiment.value)
    if f.intent is not None:
        conditions.append(MentionRow.intent == f.intent.value)
    if f.language is not None:
        conditions.append(MentionRow.language == f.language)
    if f.source is not None:
        conditions.append(MentionRow.source_id == f.source)
    if f.author is not None:
        conditions.append(func.lower(MentionRow.author) == f.author.lower())
    if f.since is not None:
        conditions.append(MentionRow.routed_at >= f.since)
    if f.until is not None:
        conditions.append(MentionRow.routed_at < f.until)
    if f.q is not None:
        conditions.append(_full_text(session, f.q))
    return conditions


def _where(
    session: AsyncSession, principal: Principal, f: Filters, now: datetime
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    departments = _departments(principal, f.department)
    assignment_filters = _assignment_filters(f, now)
    if f.department or not principal.all_departments:
        conditions.append(
            exists().where(
                AssignmentRow.mention_id == MentionRow.id,
                AssignmentRow.department.in_(departments),
                *assignment_filters,
            )
        )
    elif assignment_filters:
        conditions.append(exists().where(AssignmentRow.mention_id == MentionRow.id, *assignment_filters))
    return conditions + _mention_filters(session, f)


def _full_text(session: AsyncSession, q: str) -> ColumnElement[bool]:
    if session.get_bind().dialect.name == "postgresql":
        # A PostgreSQL-only column, left out of the models (see FTS_DOCUMENT).
        document: ColumnElement[Any] = literal_column(FTS_DOCUMENT)
        return document.bool_op("@@")(func.websearch_to_tsquery(literal_column("'simple'::regconfig"), q))
    words = [
        w.strip('"').lower()
        for w in q.split()
        if w.strip('"') and w.upper() != "OR" and not w.startswith("-")
    ]
    haystack = func.lower(MentionRow.title + " " + MentionRow.text)
    return (
        and_(*(haystack.contains(w, autoescape=True) for w in words)) if words else MentionRow.id.is_not(None)
    )


def _encode_cursor(sort: Sort, value: Any, mention_id: str) -> str:
    raw = json.dumps([sort.value, value.isoformat() if isinstance(value, datetime) else value, mention_id])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, sort: Sort) -> tuple[Any, str]:
    """The position a cursor names. A cursor comes back from the client, so it is checked like any other
    input: a forged one is a 422, never a value the database cannot take (a time without a zone or out
    of range, an id with a NUL, a number no float holds)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        sort_name, value, mention_id = json.loads(raw)
        if sort_name != sort.value:
            raise ValueError("the cursor belongs to another sort order")
        if not isinstance(mention_id, str) or len(mention_id) > 64 or unstorable(mention_id):
            raise ValueError("bad cursor id")
        if sort.value.lstrip("-") in ("routed_at", "published_at"):
            value = parse_datetime(value)
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("bad cursor value")
        else:
            value = float(value)  # OverflowError for an integer beyond a double's range
        return value, mention_id
    except (ValueError, TypeError, OverflowError, RecursionError, binascii.Error) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"invalid cursor: {exc}") from exc


def _by_assignments(principal: Principal, f: Filters, sort: Sort) -> str | None:
    """The department whose assignments a page is read through, or None to walk the mentions.

    A list filtered on a status or a priority, or on overdue, in one department, newest or oldest first,
    reads that department's matching assignments in order from ix_assignments_department_status_routed or
    ix_assignments_department_priority_routed (the mention's routed_at is copied on each assignment,
    migration 0008) and joins their mentions: the cost is the page, however rare the matches. Walking
    the mentions and probing each one's assignment is right when matches are dense, and took seconds
    when they were not (docs/performance.md). Several departments, or several values of the filter,
    would need a merge of several index ranges, which PostgreSQL 15 does as a sort of them all: those
    lists keep walking the mentions."""
    if sort not in (Sort.ROUTED_DESC, Sort.ROUTED_ASC):
        return None
    departments = _departments(principal, f.department)
    if len(departments) != 1:
        return None
    if len(f.status) == 1 or len(f.priority) == 1 or f.overdue is True:
        return departments[0]
    return None


def _query(
    session: AsyncSession,
    principal: Principal,
    f: Filters,
    sort: Sort,
    cursor: str | None,
    now: datetime,
    columns: Sequence[Any],
) -> Select[Any]:
    """The page's statement over `columns` plus `sort_value` (what the next cursor is made of)."""
    descending = sort.value.startswith("-")
    department = _by_assignments(principal, f, sort)
    if department is not None:
        column: Any = AssignmentRow.routed_at
        tiebreak: Any = AssignmentRow.mention_id
        query = (
            select(*columns, column.label("sort_value"))
            .select_from(AssignmentRow)
            .join(MentionRow, MentionRow.id == AssignmentRow.mention_id)
            .where(
                AssignmentRow.department == department,
                *_assignment_filters(f, now),
                *_mention_filters(session, f),
            )
        )
    else:
        column = _SORT_COLUMNS[sort.value.lstrip("-")]
        tiebreak = MentionRow.id
        query = select(*columns, column.label("sort_value")).where(*_where(session, principal, f, now))
    if cursor is not None:
        value, after_id = _decode_cursor(cursor, sort)
        # A row comparison, not `column < value OR (column = value AND id < after_id)`: PostgreSQL takes
        # it as the range condition of the (column, id) index and starts the page at the cursor, where
        # the OR form walked the index from the first row and threw away every row before the cursor
        # (a page in the middle of 1,000,000 mentions: 760 ms against 0.05 ms, docs/performance.md).
        position = tuple_(column, tiebreak)
        after = tuple_(literal(value, column.type), literal(after_id, MentionRow.id.type))
        query = query.where(position < after if descending else position > after)
    order = (column.desc(), tiebreak.desc()) if descending else (column.asc(), tiebreak.asc())
    return query.order_by(*order)


# The list's fields as the schema names them, read as plain columns (no ORM objects): a page of 50 is
# built as dicts and written by orjson, the classification passed through as the database's JSON text.
_ASSIGNMENT_FIELDS = [name for name in AssignmentPublic.model_fields if name != "overdue"]
_ASSIGNMENT_COLUMNS = [AssignmentRow.mention_id, *(getattr(AssignmentRow, n) for n in _ASSIGNMENT_FIELDS)]
_MENTION_FIELDS = [n for n in MentionPublic.model_fields if n not in ("classification", "assignments")]
_MENTION_COLUMNS = [
    *(getattr(MentionRow, n) for n in _MENTION_FIELDS),
    cast(MentionRow.classification, Text).label("classification_json"),
]
_AWAITING = frozenset(s.value for s in AWAITING_RESPONSE)


async def _assignments(
    session: AsyncSession, principal: Principal, ids: Sequence[str], now: datetime
) -> dict[str, list[dict[str, Any]]]:
    """Per mention id, its assignments in the caller's departments, as AssignmentPublic's fields."""
    out: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    if not ids:
        return out
    query = select(*_ASSIGNMENT_COLUMNS).where(AssignmentRow.mention_id.in_(ids))
    if not principal.all_departments:
        query = query.where(AssignmentRow.department.in_(sorted(principal.readable)))
    for row in await session.execute(query.order_by(AssignmentRow.priority, AssignmentRow.department)):
        a = row._mapping
        item = {name: a[name] for name in _ASSIGNMENT_FIELDS}
        item["overdue"] = (
            a["first_response_at"] is None and a["status"] in _AWAITING and a["sla_due_at"] < now
        )
        out[a["mention_id"]].append(item)
    return out


def _public(m: MentionRow, assignments: list[dict[str, Any]]) -> MentionPublic:
    return MentionPublic(
        **{name: getattr(m, name) for name in _MENTION_FIELDS},
        classification=dict(m.classification),
        assignments=[AssignmentPublic(**a) for a in assignments],
    )


async def _page(
    session: AsyncSession,
    principal: Principal,
    f: Filters,
    sort: Sort,
    cursor: str | None,
    limit: int,
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of mentions as MentionPublic's fields (the classification as an orjson.Fragment of its JSON
    text), and the cursor of the next page."""
    now = utcnow()
    query = _query(session, principal, f, sort, cursor, now, _MENTION_COLUMNS)
    rows = [row._mapping for row in await session.execute(query.limit(limit + 1))]
    more = len(rows) > limit
    rows = rows[:limit]
    assignments = await _assignments(session, principal, [m["id"] for m in rows], now)
    items: list[dict[str, Any]] = []
    for m in rows:
        item = {name: m[name] for name in _MENTION_FIELDS}
        item["classification"] = orjson.Fragment(m["classification_json"] or "{}")
        item["assignments"] = assignments[m["id"]]
        items.append(item)
    last = rows[-1] if more and rows else None
    return items, _encode_cursor(sort, last["sort_value"], last["id"]) if last is not None else None


def _json(value: Any) -> bytes:
    """JSON as pydantic writes it for the response models (UTC as `Z`)."""
    return orjson.dumps(value, option=orjson.OPT_UTC_Z)


@mentions_api.get(
    "/mentions",
    response_model=MentionPage,
    responses={403: {"description": "A department outside the key's scopes"}},
)
async def list_mentions(
    session: SessionDep,
    principal: PrincipalDep,
    f: FiltersDep,
    sort: Sort = Sort.ROUTED_DESC,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    """Mentions in the caller's departments, filtered and sorted; pass `next_cursor` back as `cursor`
    (with the same filters and sort) for the next page. Filters on assignments (status, priority,
    overdue, assignee) select mentions with one assignment matching all of them in the departments
    asked for (or all the key may read)."""
    items, next_cursor = await _page(session, principal, f, sort, cursor, limit)
    # Written here rather than through MentionPage: validating and serialising 50 mentions with their
    # evidence through pydantic was a third of the API's CPU on a list (the document still declares
    # MentionPage, and the schema tests check the bodies against it).
    return Response(_json({"items": items, "next_cursor": next_cursor}), media_type="application/json")


class ExportFormat(StrEnum):
    CSV = "csv"
    NDJSON = "ndjson"


_CSV_COLUMNS = [
    "id",
    "routed_at",
    "published_at",
    "source_id",
    "source_name",
    "kind",
    "url",
    "title",
    "author",
    "sentiment",
    "sentiment_score",
    "intent",
    "urgency",
    "language",
    "topics",
    "departments",
    "statuses",
    "priorities",
    "text",
]


# Rows an export reads per query.
EXPORT_PAGE_ROWS = 500


class ExportAborted(RuntimeError):
    """An export failed after its response started: raised out of the body so that the server aborts the
    chunked response instead of ending it as if it were complete."""


def _export_line(format: ExportFormat, item: dict[str, Any]) -> bytes:
    return _csv_line(_csv_row(item)) if format is ExportFormat.CSV else _json(item) + b"\n"


def _export_error(format: ExportFormat, sent: int, incident: str) -> bytes:
    detail = (
        f"the export failed after {sent} rows and is incomplete; quote incident {incident} when reporting it"
    )
    if format is ExportFormat.CSV:
        return _csv_line(["#error", detail])
    problem = {"type": "about:blank", "title": "Internal Server Error", "status": 500, "detail": detail}
    return _json({"error": {**problem, "incident": incident}}) + b"\n"


@mentions_api.get(
    "/mentions/export",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/csv": {}, "application/x-ndjson": {}}, "description": "The rows, streamed"}
    },
)
async def export_mentions(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    f: FiltersDep,
    format: ExportFormat = ExportFormat.NDJSON,
    sort: Sort = Sort.ROUTED_DESC,
    limit: Annotated[
        int | None, Query(ge=1, description="At most this many rows (default: the setting).")
    ] = None,
) -> StreamingResponse:
    """Every mention the filters select, streamed as CSV or NDJSON (one mention per line, as in the
    list), read from the database page by page.

    The filters are checked and the first page is read before the response starts, so that a query
    that fails answers with its problem (422, 503, 500), never a 200 and an empty file. A failure after
    that ends the file with a line that says so (CSV: a row whose first field is `#error`; NDJSON: an
    object with an `error` member, a problem) and aborts the chunked response, which HTTP clients
    report as an incomplete body: a cut export never looks complete."""
    cap = min(limit or settings.api_export_max_rows, settings.api_export_max_rows)
    first, cursor = await _page(session, principal, f, sort, None, min(EXPORT_PAGE_ROWS, cap))
    head = [_csv_line(_CSV_COLUMNS)] if format is ExportFormat.CSV else []
    lines = head + [_export_line(format, item) for item in first]
    # The request's session closes when the route returns, before the body streams: the next pages are
    # read with a session of the generator's own.
    factory: async_sessionmaker[AsyncSession] = request.app.state.sessions

    async def rows() -> AsyncIterator[bytes]:
        for line in lines:
            yield line
        sent, after = len(first), cursor
        try:
            async with factory() as own:
                while after is not None and sent < cap:
                    size = min(EXPORT_PAGE_ROWS, cap - sent)
                    items, after = await _page(own, principal, f, sort, after, size)
                    for item in items:
                        yield _export_line(format, item)
                        sent += 1
        except Exception as exc:
            incident = uuid.uuid4().hex[:12]
            log.error("export failed after %d rows (incident %s)", sent, incident, exc_info=exc)
            yield _export_error(format, sent, incident)
            raise ExportAborted(incident) from exc

    media = "text/csv; charset=utf-8" if format is ExportFormat.CSV else "application/x-ndjson"
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    return StreamingResponse(
        rows(),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="mentions-{stamp}.{format.value}"'},
    )


def _csv_line(values: Sequence[object]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(values)
    return buffer.getvalue().encode()


def _csv_row(m: dict[str, Any]) -> list[object]:
    assignments = m["assignments"]
    return [
        m["id"],
        m["routed_at"].isoformat(),
        m["published_at"].isoformat(),
        m["source_id"],
        m["source_name"],
        m["kind"],
        m["url"],
        m["title"],
        m["author"],
        m["sentiment"],
        m["sentiment_score"],
        m["intent"],
        m["urgency"],
        m["language"],
        " ".join(m["topics"]),
        " ".join(a["department"] for a in assignments),
        " ".join(f"{a['department']}:{a['status']}" for a in assignments),
        " ".join(f"{a['department']}:{a['priority']}" for a in assignments),
        m["text"],
    ]


class CorrectionPublic(BaseModel):
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
    return CorrectionPublic(
        id=c.id,
        field=c.field,
        value=value,
        previous=previous,
        actor=c.actor,
        actor_key=acting_key(c.actor_key_id, c.actor_key_name),
        created_at=c.created_at,
    )


class MentionDetail(MentionPublic):
    matched_rules: list[str] = Field(
        description="Every routing rule that matched, in order; for a key of some departments only, the "
        "rules that routed the mention to one of them."
    )
    rules_version: int | None = Field(description="The rule set version that routed it.")
    activity: list[ActivityPublic]
    replies: list[ReplyPublic]
    corrections: list[CorrectionPublic]


async def _visible(session: AsyncSession, principal: Principal, mention_id: str) -> MentionRow:
    """The mention, if the caller may see it (404 otherwise: another department's mention does not exist
    for the caller)."""
    query = select(MentionRow).where(MentionRow.id == mention_id)
    if not principal.all_departments:
        query = query.where(
            exists().where(
                AssignmentRow.mention_id == MentionRow.id,
                AssignmentRow.department.in_(sorted(principal.readable)),
            )
        )
    mention = await session.scalar(query)
    if mention is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"mention {mention_id!r} not found")
    return mention


@mentions_api.get(
    "/mentions/{mention_id}",
    response_model=MentionDetail,
    responses={404: {"description": "No such mention"}},
)
async def get_mention(session: SessionDep, principal: PrincipalDep, mention_id: str) -> MentionDetail:
    """One mention: labels with evidence, the routing trail (rules, version, tags), its assignments in the
    caller's departments with their activity and replies, and the corrections made for them."""
    mention = await _visible(session, principal, mention_id)
    now = utcnow()
    assignments = await _assignments(session, principal, [mention.id], now)
    readable = sorted(principal.readable)
    activity = await session.scalars(
        select(ActivityRow)
        .where(ActivityRow.mention_id == mention.id, ActivityRow.department.in_(readable))
        .order_by(ActivityRow.id)
    )
    replies = await session.scalars(
        select(ReplyRow)
        .where(ReplyRow.mention_id == mention.id, ReplyRow.department.in_(readable))
        .order_by(ReplyRow.id)
    )
    corrections = await session.scalars(
        select(CorrectionRow).where(CorrectionRow.mention_id == mention.id).order_by(CorrectionRow.id)
    )
    base = _public(mention, assignments[mention.id])
    matched = list(mention.matched_rules)
    if not principal.all_departments:
        # Every rule that routed a department is named by that department's assignment.
        routed_here = {rule for a in assignments[mention.id] for rule in a["rules"]}
        matched = [rule for rule in matched if rule in routed_here]
    shown = (correction_public(c, principal) for c in corrections)
    return MentionDetail(
        **base.model_dump(),
        matched_rules=matched,
        rules_version=mention.rules_version,
        activity=[activity_public(a) for a in activity],
        replies=[reply_public(r) for r in replies],
        corrections=[c for c in shown if c is not None],
    )


class LabelCorrection(RequestModel):
    """A department's correction of a label; recorded for training (`mention-router train`) and applied to
    the mention's labels (the classifier's own output stays in `classification`)."""

    sentiment: Annotated[Sentiment, LAX] | None = None
    intent: Annotated[Intent, LAX] | None = None
    topics: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        default=None, max_length=20
    )


@mentions_api.post(
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
    mention = await _visible(session, principal, mention_id)
    departments = set(
        await session.scalars(select(AssignmentRow.department).where(AssignmentRow.mention_id == mention.id))
    )
    if not principal.is_admin and not departments & principal.writable:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this key may not change this mention's labels")
    changes: list[tuple[str, Any, Any]] = []
    if body.sentiment is not None:
        changes.append(("sentiment", body.sentiment.value, mention.sentiment))
        mention.sentiment = body.sentiment.value
    if body.intent is not None:
        changes.append(("intent", body.intent.value, mention.intent))
        mention.intent = body.intent.value
    if body.topics is not None:
        known = _known_topics(settings.taxonomy_file)
        unknown = sorted(set(body.topics) - known)
        if unknown:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"unknown topic(s) {unknown}")
        topics = sorted(set(body.topics))
        changes.append(("topics", topics, list(mention.topics)))
        mention.topics = topics
        await session.execute(
            MentionTopicRow.__table__.delete().where(MentionTopicRow.mention_id == mention.id)  # type: ignore[attr-defined]
        )
        session.add_all(MentionTopicRow(mention_id=mention.id, topic=t) for t in topics)
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


def _known_topics(path: Any) -> set[str]:
    from shared.classify import Taxonomy

    return set(Taxonomy.from_file(path).topics)


class QueueStats(BaseModel):
    department: str
    total: int = Field(description="Every assignment, closed ones included.")
    by_status: dict[str, int]
    open: int = Field(description="new, acknowledged, responded or reopened.")
    open_by_priority: dict[str, int]
    overdue: int = Field(description="Past the SLA without a first response.")
    oldest_open_age_s: float | None = Field(description="Age of the oldest open assignment, in seconds.")
    median_first_response_s: float | None = Field(
        description="Median time from routing to first response, over assignments routed in the window "
        "(computed at most once a minute)."
    )
    responded_in_window: int = Field(description="Assignments routed in the window with a response.")


class Queues(BaseModel):
    window_hours: int
    departments: list[QueueStats]


# The median time to first response sorts every response of the window (98,000 at a million mentions:
# 45 ms of the database's CPU per request), and moves slowly: each API process computes it per department
# and window at most once in this many seconds.
MEDIAN_MAX_AGE_S = 60.0


class _Medians:
    """Per API process: (department, window in hours) -> (when computed (monotonic), (median, count))."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, int], tuple[float, tuple[float | None, int]]] = {}
        # One computation at a time: requests arriving meanwhile wait for it instead of repeating it.
        self.lock = asyncio.Lock()

    async def get(
        self, session: AsyncSession, departments: list[str], window_hours: int, now: datetime
    ) -> dict[str, tuple[float | None, int]]:
        async with self.lock:
            at = time.monotonic()
            stale = [
                d
                for d in departments
                if (d, window_hours) not in self.values
                or at - self.values[(d, window_hours)][0] > MEDIAN_MAX_AGE_S
            ]
            if stale:
                fresh = await _median_first_response(session, stale, now - timedelta(hours=window_hours))
                for d in stale:
                    self.values[(d, window_hours)] = (at, fresh.get(d, (None, 0)))
            return {d: self.values[(d, window_hours)][1] for d in departments}


@mentions_api.get("/queues", response_model=Queues, tags=["queues"])
async def queues(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    window_hours: Annotated[
        int, Query(ge=1, le=24 * 90, description="For the median time to first response.")
    ] = 168,
) -> Queues:
    """Per department the caller may read: counts by status and priority, overdue count, the age of the
    oldest open assignment and the median time to first response."""
    now = utcnow()
    departments = [d for d in DEPARTMENTS if d in principal.readable]
    open_states = {s.value for s in OPEN}
    in_scope = AssignmentRow.department.in_(departments)
    by_status: dict[str, dict[str, int]] = {d: {} for d in departments}
    by_priority: dict[str, dict[str, int]] = {d: {} for d in departments}
    # The counts the triggers of migration 0007 keep per department, status and priority: counting every
    # assignment ever routed took 230 ms at 1.7M assignments (python -m bench.api_bench).
    for department, state, priority, n in await session.execute(
        select(
            AssignmentCountRow.department,
            AssignmentCountRow.status,
            AssignmentCountRow.priority,
            AssignmentCountRow.n,
        )
        .where(AssignmentCountRow.department.in_(departments), AssignmentCountRow.n != 0)
        .order_by(AssignmentCountRow.department, AssignmentCountRow.status, AssignmentCountRow.priority)
    ):
        by_status[department][state] = by_status[department].get(state, 0) + int(n)
        if state in open_states:
            by_priority[department][priority] = by_priority[department].get(priority, 0) + int(n)
    # The status lists are rendered as literals so that PostgreSQL can match the partial indexes of
    # migration 0007 (ix_assignments_awaiting_sla, ix_assignments_open_created) in every plan.
    awaiting = AssignmentRow.status.in_(
        bindparam("awaiting", AWAITING_STATUSES, expanding=True, literal_execute=True)
    )
    still_open = AssignmentRow.status.in_(
        bindparam("open", OPEN_STATUSES, expanding=True, literal_execute=True)
    )
    overdue: dict[str, int] = {}
    for department, n in await session.execute(
        select(AssignmentRow.department, func.count())
        .where(in_scope, awaiting, AssignmentRow.sla_due_at < now)
        .group_by(AssignmentRow.department)
    ):
        overdue[department] = int(n)
    oldest: dict[str, datetime] = {}
    if departments:
        # One min() per department, each the first entry of the partial index (a GROUP BY would read
        # every open assignment's entry).
        firsts = (
            select(func.min(AssignmentRow.created_at))
            .where(AssignmentRow.department == d, still_open)
            .scalar_subquery()
            .label(f"oldest_{i}")
            for i, d in enumerate(departments)
        )
        row = (await session.execute(select(*firsts))).one()
        for department, created in zip(departments, row, strict=True):
            if created is not None:
                oldest[department] = created if created.tzinfo else created.replace(tzinfo=UTC)
    cache: _Medians | None = getattr(request.app.state, "queue_medians", None)
    if cache is None:
        cache = request.app.state.queue_medians = _Medians()
    medians = await cache.get(session, departments, window_hours, now)
    return Queues(
        window_hours=window_hours,
        departments=[
            QueueStats(
                department=d,
                total=sum(by_status[d].values()),
                by_status=by_status[d],
                open=sum(by_priority[d].values()),
                open_by_priority=by_priority[d],
                overdue=overdue.get(d, 0),
                oldest_open_age_s=round((now - oldest[d]).total_seconds(), 1) if d in oldest else None,
                median_first_response_s=medians.get(d, (None, 0))[0],
                responded_in_window=medians.get(d, (None, 0))[1],
            )
            for d in departments
        ],
    )


async def _median_first_response(
    session: AsyncSession, departments: list[str], since: datetime
) -> dict[str, tuple[float | None, int]]:
    if not departments:
        return {}
    if session.get_bind().dialect.name == "postgresql":
        rows = await session.execute(
            text(
                "SELECT department, percentile_cont(0.5) WITHIN GROUP "
                "(ORDER BY extract(epoch FROM first_response_at - created_at)), count(*) "
                "FROM assignments WHERE department = ANY(:d) AND created_at >= :since "
                "AND first_response_at IS NOT NULL GROUP BY department"
            ),
            {"d": departments, "since": since},
        )
        return {d: (round(float(m), 1), int(n)) for d, m, n in rows}
    durations: dict[str, list[float]] = {}
    for department, created, responded in await session.execute(
        select(AssignmentRow.department, AssignmentRow.created_at, AssignmentRow.first_response_at).where(
            AssignmentRow.department.in_(departments),
            AssignmentRow.created_at >= since,
            AssignmentRow.first_response_at.is_not(None),
        )
    ):
        if responded is not None:
            durations.setdefault(department, []).append((responded - created).total_seconds())
    return {d: (round(statistics.median(v), 1), len(v)) for d, v in durations.items()}
