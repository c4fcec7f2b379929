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
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, status
from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, and_, exists, func, or_, select

from services.api.auth import PrincipalDep, check_read
from services.api.deps import ActorDep, SessionDep, SettingsDep
from services.api.inputs import UtcDatetime
from services.api.schemas import ActingKey, acting_key
from shared.alerts import day_floor, hour_floor, time_bucket
from shared.apikeys import Principal
from shared.db import AlertRow, AssignmentRow, MentionRow, MentionTopicRow
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


class AlertPublic(BaseModel):
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
    step, floor = _STEP[bucket], _FLOOR[bucket]
    end = to or utcnow()
    try:
        begin = start or floor(end - _TINY) - (_DEFAULT_BUCKETS[bucket] - 1) * step
        if begin >= end:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "`from` must be before `to`")
        buckets = (floor(end - _TINY) - floor(begin)) // step + 1
    except OverflowError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "the window is out of range") from exc
    if buckets > settings.stats_max_buckets:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"the window spans {buckets} {bucket.value}s; at most {settings.stats_max_buckets} per request "
            "(narrow it, or use bucket=day)",
        )
    groups = list(dict.fromkeys(group_by or []))
    wanted = list(dict.fromkeys(department or []))
    for d in wanted:
        check_read(principal, d.value)
    restricted = bool(wanted) or not principal.all_departments
    departments = [d.value for d in wanted] if wanted else sorted(principal.readable)

    dialect = session.get_bind().dialect.name
    bucket_start = time_bucket(dialect, MentionRow.routed_at, bucket.value).label("bucket_start")
    keys: list[ColumnElement[Any]] = [bucket_start]
    query = select().select_from(MentionRow).where(MentionRow.routed_at >= begin, MentionRow.routed_at < end)
    if GroupBy.DEPARTMENT in groups:
        # One row per (mention, department): the uq_assignments_mention_department index serves the join.
        query = query.join(AssignmentRow, AssignmentRow.mention_id == MentionRow.id)
        if restricted:
            query = query.where(AssignmentRow.department.in_(departments))
        keys.append(AssignmentRow.department.label("department"))
    elif restricted:
        query = query.where(
            exists().where(
                AssignmentRow.mention_id == MentionRow.id, AssignmentRow.department.in_(departments)
            )
        )
    if GroupBy.TOPIC in groups:
        on = MentionTopicRow.mention_id == MentionRow.id
        if topic is not None:
            query = query.join(MentionTopicRow, and_(on, MentionTopicRow.topic == topic))
        else:
            query = query.outerjoin(MentionTopicRow, on)
        keys.append(MentionTopicRow.topic.label("topic"))
    elif topic is not None:
        query = query.where(
            exists().where(MentionTopicRow.mention_id == MentionRow.id, MentionTopicRow.topic == topic)
        )
    if sentiment is not None:
        query = query.where(MentionRow.sentiment == sentiment.value)
    if GroupBy.SENTIMENT in groups:
        keys.append(MentionRow.sentiment.label("sentiment"))
    query = query.add_columns(*keys, func.count().label("count")).group_by(*keys)

    series = []
    for row in (await session.execute(query)).mappings():
        point = {"bucket_start": row["bucket_start"], "count": int(row["count"])}
        point.update({g.value: row[g.value] for g in groups})
        series.append(StatsPoint(**point))
    series.sort(key=lambda p: (p.bucket_start, *(getattr(p, g.value) or "" for g in groups)))
    return MentionStats(bucket=bucket, from_=begin, to=end, group_by=groups, series=series)


def _visible(principal: Principal) -> list[ColumnElement[bool]]:
    if principal.all_departments:
        return []
    return [or_(AlertRow.department.is_(None), AlertRow.department.in_(sorted(principal.readable)))]


def _alert_public(row: AlertRow) -> AlertPublic:
    return AlertPublic(
        id=row.id,
        kind=row.kind,
        topic=row.topic,
        department=row.department,
        window_start=row.window_start,
        window_end=row.window_end,
        count=row.count,
        baseline=row.baseline,
        stddev=row.stddev,
        baseline_hours=row.baseline_hours,
        threshold=row.threshold,
        ratio=round(row.count / row.baseline, 3) if row.baseline > 0 else None,
        created_at=row.created_at,
        updated_at=row.updated_at,
        acknowledged_at=row.acknowledged_at,
        acknowledged_by=row.acknowledged_by,
        acknowledged_by_key=acting_key(row.acknowledged_by_key_id, row.acknowledged_by_key_name),
    )


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
    query = select(AlertRow).where(*_visible(principal))
    if since is not None:
        query = query.where(AlertRow.created_at >= since)
    if topic is not None:
        query = query.where(AlertRow.topic == topic)
    if acknowledged is not None:
        query = query.where(
            AlertRow.acknowledged_at.is_not(None) if acknowledged else AlertRow.acknowledged_at.is_(None)
        )
    if cursor is not None:
        query = query.where(AlertRow.id < min(int(cursor), _MAX_ID))
    rows = list(await session.scalars(query.order_by(AlertRow.id.desc()).limit(limit + 1)))
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
    row = await session.scalar(
        select(AlertRow).where(AlertRow.id == alert_id, *_visible(principal)).with_for_update()
    )
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
