"""Stats and alerts: mentions per hour or day by department, topic and sentiment; spike alerts.

Both are restricted to the caller's departments in SQL. A mention counts for a key that reads every
department whatever it is (near-duplicates included); for any other key only when it is routed to one of
the key's departments, and grouped by department only under those. An alert belongs to the department of
its topic in the taxonomy; one without a department (a topic since removed from the taxonomy) is shown to
every key. The spikes themselves are found by the router (shared/alerts.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status
from pydantic import BaseModel, Field

from services.api.auth import PrincipalDep, check_read
from services.api.deps import ActorDep, SessionDep, SettingsDep
from services.api.inputs import UtcDatetime
from services.api.queries import stats as queries
from services.api.schemas import ActingKey, RowModel, from_row
from shared.alerts import day_floor, hour_floor
from shared.apikeys import Principal
from shared.db import AlertRow
from shared.events import Department, Sentiment, utcnow

stats_api = APIRouter(prefix="/v1")


class Bucket(StrEnum):
    HOUR = "hour"
    DAY = "day"


class GroupBy(StrEnum):
    DEPARTMENT = "department"
    TOPIC = "topic"
    SENTIMENT = "sentiment"


_STEP = {Bucket.HOUR: timedelta(hours=1), Bucket.DAY: timedelta(days=1)}
_FLOOR = {Bucket.HOUR: hour_floor, Bucket.DAY: day_floor}
# Without `from`: the last 24 hours or the last 30 days, the current (partial) bucket the last of them.
_DEFAULT_BUCKETS = {Bucket.HOUR: 24, Bucket.DAY: 30}
_TINY = timedelta(microseconds=1)
_MAX_ID = 2**31 - 1  # alerts.id is a 32-bit integer


class StatsPoint(BaseModel):
    bucket_start: datetime = Field(description="The start of the hour or day (UTC).")
    department: str | None = Field(default=None, description="Only with group_by=department.")
    topic: str | None = Field(
        default=None, description="Only with group_by=topic; null counts the mentions with no topic."
    )
    sentiment: str | None = Field(default=None, description="Only with group_by=sentiment.")
    count: int = Field(description="Mentions routed in the bucket (and the group).")


class MentionStats(BaseModel):
    bucket: Bucket
    from_: datetime = Field(serialization_alias="from", description="The window's start (inclusive).")
    to: datetime = Field(description="The window's end (exclusive).")
    group_by: list[GroupBy]
    series: list[StatsPoint] = Field(
        description="Sorted by bucket, then by the keys in the order of `group_by`; buckets and groups "
        "without mentions are left out."
    )


class AlertPublic(RowModel):
    id: int
    kind: str = Field(description="`spike`")
    topic: str
    department: str | None = Field(description="The topic's department in the taxonomy.")
    window_start: datetime = Field(description="The clock hour of the spike (UTC)...")
    window_end: datetime
    count: int = Field(description="Mentions of the topic in the hour, as of the last detection.")
    baseline: float = Field(description="Mean mentions per hour of the topic before the window.")
    stddev: float
    baseline_hours: int
    threshold: float = Field(description="The count at which the hour became a spike.")
    ratio: float | None = Field(description="count / baseline; null for a topic with no mentions before.")
    created_at: datetime
    updated_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None = Field(description="Display name: X-Actor, else the key's name.")
    acknowledged_by_key: ActingKey | None = Field(description="The API key that acknowledged it.")


class AlertPage(BaseModel):
    items: list[AlertPublic]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last.")


@stats_api.get(
    "/stats/mentions", response_model=MentionStats, response_model_exclude_unset=True, tags=["stats"]
)
async def mention_stats(
    session: SessionDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    bucket: Bucket = Bucket.HOUR,
    start: Annotated[
        UtcDatetime | None,
        Query(
            alias="from",
            description="Routed at or after (ISO 8601 with a zone). Default: the start of the 24th hour "
            "or the 30th day before `to`, whichever `bucket` is.",
        ),
    ] = None,
    to: Annotated[
        UtcDatetime | None, Query(description="Routed before (ISO 8601 with a zone). Default: now.")
    ] = None,
    group_by: Annotated[
        list[GroupBy] | None,
        Query(description="Repeat for several (`group_by=department&group_by=topic`); none: totals."),
    ] = None,
    department: Annotated[
        list[Department] | None, Query(description="Only these departments' mentions (repeat for several).")
    ] = None,
    topic: Annotated[str | None, Query(max_length=64, description="Only mentions with this topic.")] = None,
    sentiment: Sentiment | None = None,
) -> MentionStats:
    """Mentions per hour or day over a window, by department, topic and sentiment (any of them)."""
    begin, end = _window(bucket, start, to, settings.stats_max_buckets)
    groups = list(dict.fromkeys(group_by or []))
    rows = await queries.mention_counts(
        session,
        bucket=bucket.value,
        begin=begin,
        end=end,
        groups=[g.value for g in groups],
        departments=_departments(principal, department or []),
        topic=topic,
        sentiment=sentiment.value if sentiment is not None else None,
    )
    series = []
    for row in rows:
        point = {"bucket_start": row["bucket_start"], "count": int(row["count"])}
        point.update({g.value: row[g.value] for g in groups})
        series.append(StatsPoint(**point))
    series.sort(key=lambda p: (p.bucket_start, *(getattr(p, g.value) or "" for g in groups)))
    return MentionStats(bucket=bucket, from_=begin, to=end, group_by=groups, series=series)


def _window(
    bucket: Bucket, start: datetime | None, to: datetime | None, max_buckets: int
) -> tuple[datetime, datetime]:
    """The window asked for, or the default one; 422 when it is empty, out of range or too long."""
    step, floor = _STEP[bucket], _FLOOR[bucket]
    end = to or utcnow()
    try:
        begin = start or floor(end - _TINY) - (_DEFAULT_BUCKETS[bucket] - 1) * step
        if begin >= end:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "`from` must be before `to`")
        buckets = (floor(end - _TINY) - floor(begin)) // step + 1
    except OverflowError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "the window is out of range") from exc
    if buckets > max_buckets:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"the window spans {buckets} {bucket.value}s; at most {max_buckets} per request "
            "(narrow it, or use bucket=day)",
        )
    return begin, end


def _departments(principal: Principal, wanted: list[Department]) -> list[str] | None:
    """The departments whose mentions count: those asked for (403 for one the key may not read), else
    the key's; None for a key of every department that asked for none (every mention counts)."""
    wanted = list(dict.fromkeys(wanted))
    for d in wanted:
        check_read(principal, d.value)
    if not wanted and principal.all_departments:
        return None
    return [d.value for d in wanted] if wanted else sorted(principal.readable)


def _readable(principal: Principal) -> list[str] | None:
    """The departments whose alerts the key sees (None: all)."""
    return None if principal.all_departments else sorted(principal.readable)


def _alert_public(row: AlertRow) -> AlertPublic:
    """The alert as the API shows it: the row's columns and `ratio`, derived from two of them."""
    return from_row(AlertPublic, row, ratio=round(row.count / row.baseline, 3) if row.baseline > 0 else None)


@stats_api.get("/alerts", response_model=AlertPage, tags=["alerts"])
async def list_alerts(
    session: SessionDep,
    principal: PrincipalDep,
    since: Annotated[
        UtcDatetime | None, Query(description="Raised at or after (ISO 8601 with a zone).")
    ] = None,
    topic: Annotated[str | None, Query(max_length=64)] = None,
    acknowledged: Annotated[
        bool | None, Query(description="Only acknowledged ones, or only open ones.")
    ] = None,
    cursor: Annotated[str | None, Query(max_length=10, pattern=r"^[0-9]+$")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> AlertPage:
    """Spike alerts of the caller's departments, newest first."""
    rows = await queries.alerts(
        session,
        departments=_readable(principal),
        since=since,
        topic=topic,
        acknowledged=acknowledged,
        before_id=min(int(cursor), _MAX_ID) if cursor is not None else None,
        limit=limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return AlertPage(
        items=[_alert_public(r) for r in rows], next_cursor=str(rows[-1].id) if more and rows else None
    )


@stats_api.post(
    "/alerts/{alert_id}/acknowledge",
    response_model=AlertPublic,
    tags=["alerts"],
    responses={
        403: {"description": "The key may read the alert's department but not change it"},
        404: {"description": "No such alert (or not one of the caller's departments)"},
    },
)
async def acknowledge_alert(
    session: SessionDep,
    principal: PrincipalDep,
    actor: ActorDep,
    alert_id: Annotated[int, Path(ge=1, le=_MAX_ID)],
) -> AlertPublic:
    """Mark an alert as seen; acknowledging it again keeps the first acknowledgement."""
    row = await queries.alert_for_update(session, alert_id, _readable(principal))
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"alert {alert_id} not found")
    if row.department not in principal.writable and (row.department is not None or not principal.writable):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"this key may not acknowledge {row.department or 'these'} alerts"
        )
    if row.acknowledged_at is None:
        row.acknowledged_at = utcnow()
        row.acknowledged_by = actor.name
        row.acknowledged_by_key_id, row.acknowledged_by_key_name = actor.key_id, actor.key_name
        await session.commit()
    return _alert_public(row)
