"""The SQL of the mentions: the list's filters, full text, cursors and page, the visible-mention lookup and
the reads of a mention's detail.

Every query is restricted to the caller's departments in SQL: a mention is visible when it has an
assignment in a department the key may read (admins also see unrouted near-duplicates), and only those
assignments are shown.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from fastapi import HTTPException, status
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
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.auth import check_read
from services.api.inputs import parse_datetime
from services.api.mention_filters import Filters, Sort
from services.api.queries import driver
from services.api.schemas import AssignmentPublic, MentionPublic, overdue
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
from shared.db.models import AWAITING_STATUSES
from shared.events import Department, utcnow
from shared.textsafe import unstorable

# The document of PostgreSQL's full-text search: `mentions.search`, the stored tsvector of title and text
# with the GIN index ix_mentions_search (migration 0007; `simple`: no stemming, mentions come in many
# languages). Stored, so that a list walking the newest mentions tests each one's vector instead of
# computing it again (0.1 ms a mention).
FTS_DOCUMENT = "mentions.search"


_SORT_COLUMNS = {
    "routed_at": MentionRow.routed_at,
    "published_at": MentionRow.published_at,
    "urgency": MentionRow.urgency,
    "sentiment_score": MentionRow.sentiment_score,
}


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


def encode_cursor(sort: Sort, value: Any, mention_id: str) -> str:
    """The cursor of the page after the mention `mention_id` whose sort column holds `value`."""
    raw = json.dumps([sort.value, value.isoformat() if isinstance(value, datetime) else value, mention_id])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, sort: Sort) -> tuple[Any, str]:
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


# A list filtered on an assignment's status, priority or overdue flag in several departments reads the
# matching assignments (their distinct mentions, newest first) instead of walking the mentions and probing
# each one, when the counts the triggers keep say at most this many assignments match: a deep page of a
# sparse filter walked to the end of the table (status=acknowledged at 1,000,000 mentions: 2.9 s of one
# core for one page, docs/performance.md). Denser filters find their page within the newest mentions.
SPARSE_ASSIGNMENTS = 30_000


async def _sparse(session: AsyncSession, principal: Principal, f: Filters, sort: Sort) -> bool:
    """Whether the page is read through the assignments of several departments (see SPARSE_ASSIGNMENTS)."""
    if sort not in (Sort.ROUTED_DESC, Sort.ROUTED_ASC) or not (f.status or f.priority or f.overdue is True):
        return False
    departments = _departments(principal, f.department)
    if len(departments) < 2:
        return False  # one department: `_by_assignments`
    query = select(func.coalesce(func.sum(AssignmentCountRow.n), 0)).where(
        AssignmentCountRow.department.in_(departments)
    )
    if f.status:
        query = query.where(AssignmentCountRow.status.in_([s.value for s in f.status]))
    elif f.overdue is True:
        query = query.where(AssignmentCountRow.status.in_(AWAITING_STATUSES))
    if f.priority:
        query = query.where(AssignmentCountRow.priority.in_([p.value for p in f.priority]))
    return int(await session.scalar(query) or 0) <= SPARSE_ASSIGNMENTS


def _page_query(
    session: AsyncSession,
    principal: Principal,
    f: Filters,
    sort: Sort,
    cursor: str | None,
    now: datetime,
    columns: Sequence[Any],
    *,
    sparse: bool = False,
    limit: int | None = None,
) -> Select[Any]:
    """The page's statement over `columns` plus `sort_value` (what the next cursor is made of), at most
    `limit` rows (the caller limits the statement too)."""
    descending = sort.value.startswith("-")
    department = _by_assignments(principal, f, sort)
    if sparse and department is None:
        # The page is chosen among the matching assignments (sorted, limited) before any mention is read.
        inner = select(AssignmentRow.mention_id, AssignmentRow.routed_at).where(
            AssignmentRow.department.in_(_departments(principal, f.department)), *_assignment_filters(f, now)
        )
        mention_filters = _mention_filters(session, f)
        if mention_filters:
            inner = inner.join(MentionRow, MentionRow.id == AssignmentRow.mention_id).where(*mention_filters)
        if cursor is not None:
            value, after_id = decode_cursor(cursor, sort)
            position = tuple_(AssignmentRow.routed_at, AssignmentRow.mention_id)
            after = tuple_(
                literal(value, AssignmentRow.routed_at.type), literal(after_id, MentionRow.id.type)
            )
            inner = inner.where(position < after if descending else position > after)
        ordered = (
            (AssignmentRow.routed_at.desc(), AssignmentRow.mention_id.desc())
            if descending
            else (AssignmentRow.routed_at.asc(), AssignmentRow.mention_id.asc())
        )
        matches = inner.distinct().order_by(*ordered).limit(limit).subquery("matches")
        column: Any = matches.c.routed_at
        tiebreak: Any = matches.c.mention_id
        query = (
            select(*columns, column.label("sort_value"))
            .select_from(matches)
            .join(MentionRow, MentionRow.id == matches.c.mention_id)
        )
    elif department is not None:
        column = AssignmentRow.routed_at
        tiebreak = AssignmentRow.mention_id
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
        value, after_id = decode_cursor(cursor, sort)
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


_ASSIGNMENTS_SQL = (
    f"SELECT {driver.columns(AssignmentRow, ['mention_id', *_ASSIGNMENT_FIELDS])} FROM assignments "
    "WHERE mention_id = ANY($1::varchar[]) {scope}ORDER BY priority, department"
)
_ASSIGNMENTS_ALL = _ASSIGNMENTS_SQL.format(scope="")
_ASSIGNMENTS_SCOPED = _ASSIGNMENTS_SQL.format(scope="AND department = ANY($2::varchar[]) ")


async def assignments_of(
    session: AsyncSession, principal: Principal, ids: Sequence[str], now: datetime
) -> dict[str, list[dict[str, Any]]]:
    """Per mention id, its assignments in the caller's departments, as AssignmentPublic's fields."""
    out: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    if not ids:
        return out
    rows: Sequence[Any]
    pg = await driver.connection(session)
    if pg is not None:
        if principal.all_departments:
            rows = await driver.call(session, pg.fetch, _ASSIGNMENTS_ALL, list(ids))
        else:
            rows = await driver.call(
                session, pg.fetch, _ASSIGNMENTS_SCOPED, list(ids), sorted(principal.readable)
            )
    else:
        query = select(*_ASSIGNMENT_COLUMNS).where(AssignmentRow.mention_id.in_(ids))
        if not principal.all_departments:
            query = query.where(AssignmentRow.department.in_(sorted(principal.readable)))
        result = await session.execute(query.order_by(AssignmentRow.priority, AssignmentRow.department))
        rows = [row._mapping for row in result]
    for a in rows:
        item = {name: a[name] for name in _ASSIGNMENT_FIELDS}
        item["overdue"] = overdue(
            status=a["status"], first_response_at=a["first_response_at"], sla_due_at=a["sla_due_at"], now=now
        )
        out[a["mention_id"]].append(item)
    return out


# What a conditional list request reads first (validators.page_tag): the fields of an item that can change.
_LIGHT_FIELDS = ["id", "sentiment", "intent", "topics"]
_LIGHT_COLUMNS = [getattr(MentionRow, n) for n in _LIGHT_FIELDS]


async def page(
    session: AsyncSession,
    principal: Principal,
    f: Filters,
    sort: Sort,
    cursor: str | None,
    limit: int,
    *,
    light: bool = False,
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of mentions as MentionPublic's fields (the classification as an orjson.Fragment of its JSON
    text), and the cursor of the next page. `light`: only the fields that decide the page's ETag (the
    ids, the correctable labels and the assignments), for a conditional request."""
    now = utcnow()
    fields, columns = (_LIGHT_FIELDS, _LIGHT_COLUMNS) if light else (_MENTION_FIELDS, _MENTION_COLUMNS)
    sparse = await _sparse(session, principal, f, sort)
    query = _page_query(session, principal, f, sort, cursor, now, columns, sparse=sparse, limit=limit + 1)
    rows = list(await driver.fetch(session, query.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    assignments = await assignments_of(session, principal, [m["id"] for m in rows], now)
    items: list[dict[str, Any]] = []
    for m in rows:
        item = {name: m[name] for name in fields}
        if not light:
            item["classification"] = orjson.Fragment(m["classification_json"] or "{}")
        item["assignments"] = assignments[m["id"]]
        items.append(item)
    last = rows[-1] if more and rows else None
    return items, encode_cursor(sort, last["sort_value"], last["id"]) if last is not None else None


async def visible_mention(session: AsyncSession, principal: Principal, mention_id: str) -> MentionRow:
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


_MENTION_SQL = f"SELECT {driver.columns(MentionRow)} FROM mentions WHERE id = $1"
_MENTION_SCOPED_SQL = (
    _MENTION_SQL + " AND EXISTS (SELECT 1 FROM assignments a WHERE a.mention_id = mentions.id "
    "AND a.department = ANY($2::varchar[]))"
)
_ACTIVITY_SQL = (
    f"SELECT {driver.columns(ActivityRow)} FROM activity "
    "WHERE mention_id = $1 AND department = ANY($2::varchar[]) ORDER BY id"
)
_REPLIES_SQL = (
    f"SELECT {driver.columns(ReplyRow)} FROM replies "
    "WHERE mention_id = $1 AND department = ANY($2::varchar[]) ORDER BY id"
)
_CORRECTIONS_SQL = (
    f"SELECT {driver.columns(CorrectionRow)} FROM corrections WHERE mention_id = $1 ORDER BY id"
)


async def mention_view(session: AsyncSession, principal: Principal, mention_id: str) -> Any:
    """The mention as a read-only row (attributes as MentionRow's), if the caller may see it (else 404);
    for the detail, which changes nothing (`visible_mention` gives the ORM object to change)."""
    pg = await driver.connection(session)
    if pg is None:
        return await visible_mention(session, principal, mention_id)
    if principal.all_departments:
        row = await driver.call(session, pg.fetchrow, _MENTION_SQL, mention_id)
    else:
        row = await driver.call(
            session, pg.fetchrow, _MENTION_SCOPED_SQL, mention_id, sorted(principal.readable)
        )
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"mention {mention_id!r} not found")
    return driver.Row(row)


async def activity_of(session: AsyncSession, mention_id: str, departments: Sequence[str]) -> Sequence[Any]:
    """The activity of the mention's assignments in `departments`, oldest first."""
    return await _departments_rows(session, ActivityRow, _ACTIVITY_SQL, mention_id, departments)


async def replies_of(session: AsyncSession, mention_id: str, departments: Sequence[str]) -> Sequence[Any]:
    """The replies recorded by `departments` for the mention, oldest first."""
    return await _departments_rows(session, ReplyRow, _REPLIES_SQL, mention_id, departments)


async def _departments_rows(
    session: AsyncSession,
    model: type[ActivityRow] | type[ReplyRow],
    sql: str,
    mention_id: str,
    departments: Sequence[str],
) -> Sequence[Any]:
    """The mention's rows of `model` (activity, replies) in `departments`, oldest first: `sql` on
    PostgreSQL, the same query through SQLAlchemy elsewhere."""
    pg = await driver.connection(session)
    if pg is not None:
        return [
            driver.Row(r) for r in await driver.call(session, pg.fetch, sql, mention_id, list(departments))
        ]
    query = select(model).where(model.mention_id == mention_id, model.department.in_(departments))
    return list(await session.scalars(query.order_by(model.id)))


async def corrections_of(session: AsyncSession, mention_id: str) -> Sequence[Any]:
    """Every correction of the mention's labels, oldest first (who may see which: corrections.py)."""
    pg = await driver.connection(session)
    if pg is not None:
        return [driver.Row(r) for r in await driver.call(session, pg.fetch, _CORRECTIONS_SQL, mention_id)]
    return list(
        await session.scalars(
            select(CorrectionRow).where(CorrectionRow.mention_id == mention_id).order_by(CorrectionRow.id)
        )
    )


async def departments_of(session: AsyncSession, mention_id: str) -> set[str]:
    """The departments the mention is assigned to."""
    return set(
        await session.scalars(select(AssignmentRow.department).where(AssignmentRow.mention_id == mention_id))
    )


async def replace_topics(session: AsyncSession, mention: MentionRow, topics: list[str]) -> None:
    """The mention's topics become `topics`, in the row and in its topic index (mention_topics)."""
    mention.topics = topics
    await session.execute(
        MentionTopicRow.__table__.delete().where(MentionTopicRow.mention_id == mention.id)  # type: ignore[attr-defined]
    )
    session.add_all(MentionTopicRow(mention_id=mention.id, topic=t) for t in topics)
