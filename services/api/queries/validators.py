"""What decides whether a caller's copy of a mention or of a list page is current (services/api/
conditional.py), read without the answer itself.

A mention's detail changes only through its assignments (each change bumps the assignment's `version`,
shared/workflow), new activity, replies and corrections (rows with growing ids), and time (an assignment
passing its SLA becomes `overdue`); its text and the classifier's labels never change, and a corrected
label comes with a correction row. A list item changes through the labels people correct (sentiment,
intent, topics) and its assignments. So the tag of a detail is made of those ids, versions and overdue
flags, and the tag of a list page of its mentions' ids and corrected labels, its assignments' versions
and flags, and the next cursor. The answer's route computes the same tag from the rows it read
(`detail_tag`, `page_tag`); on PostgreSQL a conditional request first reads only these, in one statement
for a detail (`detail_state`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import HTTPException, status
from sqlalchemy.ext.asyncio import AsyncSession

from services.api import conditional
from services.api.queries import driver
from services.api.schemas import overdue
from shared.apikeys import Principal


@dataclass(frozen=True)
class DetailState:
    """What a mention's detail is made of, for its tag: per visible assignment (id, version, status,
    first response, SLA due, updated), and the newest (id, time) of its activity, replies, corrections."""

    routed_at: datetime
    assignments: Sequence[tuple[int, int, str, datetime | None, datetime, datetime]]
    activity: tuple[int | None, datetime | None]
    replies: tuple[int | None, datetime | None]
    corrections: tuple[int | None, datetime | None]


def _assignment_parts(
    rows: Iterable[tuple[int, int, str, datetime | None, datetime, datetime]], now: datetime
) -> tuple[list[str], list[datetime]]:
    parts: list[str] = []
    times: list[datetime] = []
    for id_, version, state, responded, due, updated in sorted(rows):
        late = overdue(status=state, first_response_at=responded, sla_due_at=due, now=now)
        parts.append(f"{id_}-{version}-{int(late)}")
        times.append(updated)
        if late:
            times.append(due)  # the detail changed when the assignment became overdue
    return parts, times


def detail_tag(
    principal: Principal, mention_id: str, state: DetailState, now: datetime
) -> tuple[str, datetime]:
    """(ETag, Last-Modified) of the mention's detail as `principal` sees it."""
    parts, times = _assignment_parts(state.assignments, now)
    tag = conditional.etag(
        principal,
        ["detail", mention_id, *parts, state.activity[0], state.replies[0], state.corrections[0]],
    )
    times.append(state.routed_at)
    times.extend(t for _, t in (state.activity, state.replies, state.corrections) if t is not None)
    return tag, max(times)


def detail_state_of(
    routed_at: datetime,
    assignments: Sequence[Mapping[str, Any]],
    activity: Sequence[Any],
    replies: Sequence[Any],
    corrections: Sequence[Any],
) -> DetailState:
    """The state of a detail from the rows its route read."""
    return DetailState(
        routed_at=routed_at,
        assignments=[
            (
                a["id"],
                a["version"],
                a["status"],
                a["first_response_at"],
                a["sla_due_at"],
                a["updated_at"],
            )
            for a in assignments
        ],
        activity=_newest((r.id, r.at) for r in activity),
        replies=_newest((r.id, r.created_at) for r in replies),
        corrections=_newest((r.id, r.created_at) for r in corrections),
    )


def _newest(rows: Iterable[tuple[int, datetime]]) -> tuple[int | None, datetime | None]:
    ids_times = list(rows)
    if not ids_times:
        return None, None
    return max(i for i, _ in ids_times), max(t for _, t in ids_times)


_DETAIL_STATE_SQL = """
SELECT m.routed_at, a.ids, a.versions, a.statuses, a.responded, a.due, a.updated,
       act.id AS activity_id, act.at AS activity_at, rep.id AS reply_id, rep.at AS reply_at,
       cor.id AS correction_id, cor.at AS correction_at
FROM mentions m
LEFT JOIN LATERAL (
    SELECT array_agg(id ORDER BY id) AS ids, array_agg(version ORDER BY id) AS versions,
           array_agg(status ORDER BY id) AS statuses, array_agg(first_response_at ORDER BY id) AS responded,
           array_agg(sla_due_at ORDER BY id) AS due, array_agg(updated_at ORDER BY id) AS updated
    FROM assignments WHERE mention_id = m.id AND department = ANY($2::varchar[])
) a ON true
LEFT JOIN LATERAL (
    SELECT max(id) AS id, max(at) AS at FROM activity
    WHERE mention_id = m.id AND department = ANY($2::varchar[])
) act ON true
LEFT JOIN LATERAL (
    SELECT max(id) AS id, max(created_at) AS at FROM replies
    WHERE mention_id = m.id AND department = ANY($2::varchar[])
) rep ON true
LEFT JOIN LATERAL (SELECT max(id) AS id, max(created_at) AS at FROM corrections WHERE mention_id = m.id) cor
    ON true
WHERE m.id = $1
"""


async def detail_state(session: AsyncSession, principal: Principal, mention_id: str) -> DetailState | None:
    """The state of the mention's detail in one statement (404 if the caller may not see it), or None on
    a database without the fast path (the route then reads the detail and compares its tag)."""
    pg = await driver.connection(session)
    if pg is None:
        return None
    row = await driver.call(session, pg.fetchrow, _DETAIL_STATE_SQL, mention_id, sorted(principal.readable))
    if row is None or (row["ids"] is None and not principal.all_departments):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"mention {mention_id!r} not found")
    columns = ("ids", "versions", "statuses", "responded", "due", "updated")
    assignments = list(zip(*(row[c] for c in columns), strict=True)) if row["ids"] is not None else []
    return DetailState(
        routed_at=row["routed_at"],
        assignments=assignments,
        activity=(row["activity_id"], row["activity_at"]),
        replies=(row["reply_id"], row["reply_at"]),
        corrections=(row["correction_id"], row["correction_at"]),
    )


def page_tag(
    principal: Principal, items: Sequence[Mapping[str, Any]], next_cursor: str | None, now: datetime
) -> str:
    """The ETag of a list page: its mentions' ids and correctable labels, their assignments' versions and
    overdue flags, and the next cursor."""
    parts: list[object] = ["page", next_cursor]
    for item in items:
        parts += [item["id"], item["sentiment"], item["intent"], ",".join(item["topics"])]
        for a in item["assignments"]:
            late = overdue(
                status=a["status"],
                first_response_at=a["first_response_at"],
                sla_due_at=a["sla_due_at"],
                now=now,
            )
            parts.append(f"{a['id']}-{a['version']}-{int(late)}")
    return conditional.etag(principal, parts)
