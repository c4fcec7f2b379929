"""The SQL of the stats and the spike alerts (the alerts themselves are found by the router,
shared/alerts.py)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, RowMapping, and_, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.alerts import time_bucket
from shared.db import AlertRow, AssignmentRow, MentionRow, MentionTopicRow


async def mention_counts(
    session: AsyncSession,
    *,
    bucket: Literal["hour", "day"],
    begin: datetime,
    end: datetime,
    groups: Collection[str],
    departments: Sequence[str] | None,
    topic: str | None,
    sentiment: str | None,
) -> list[RowMapping]:
    """Mentions routed in [begin, end) per `bucket` (hour or day) and per the `groups` named (department,
    topic, sentiment): rows of `bucket_start`, each group, and `count`. With `departments`, only the
    mentions routed to one of them (and grouped by department only under those); without, every mention,
    near-duplicates included. A mention without a topic counts under the topic null."""
    dialect = session.get_bind().dialect.name
    bucket_start = time_bucket(dialect, MentionRow.routed_at, bucket).label("bucket_start")
    keys: list[ColumnElement[Any]] = [bucket_start]
    query = select().select_from(MentionRow).where(MentionRow.routed_at >= begin, MentionRow.routed_at < end)
    if "department" in groups:
        # One row per (mention, department): the uq_assignments_mention_department index serves the join.
        query = query.join(AssignmentRow, AssignmentRow.mention_id == MentionRow.id)
        if departments is not None:
            query = query.where(AssignmentRow.department.in_(departments))
        keys.append(AssignmentRow.department.label("department"))
    elif departments is not None:
        query = query.where(
            exists().where(
                AssignmentRow.mention_id == MentionRow.id, AssignmentRow.department.in_(departments)
            )
        )
    if "topic" in groups:
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
        query = query.where(MentionRow.sentiment == sentiment)
    if "sentiment" in groups:
        keys.append(MentionRow.sentiment.label("sentiment"))
    query = query.add_columns(*keys, func.count().label("count")).group_by(*keys)
    return list((await session.execute(query)).mappings())


def _alerts_of(departments: Collection[str] | None) -> list[ColumnElement[bool]]:
    """The alerts of `departments` (None: all), and those of no department (a topic since removed from
    the taxonomy), which every key sees."""
    if departments is None:
        return []
    return [or_(AlertRow.department.is_(None), AlertRow.department.in_(sorted(departments)))]


async def alerts(
    session: AsyncSession,
    *,
    departments: Collection[str] | None,
    since: datetime | None,
    topic: str | None,
    acknowledged: bool | None,
    before_id: int | None,
    limit: int,
) -> list[AlertRow]:
    """Up to `limit` alerts of `departments` (see _alerts_of), newest first, filtered as given."""
    query = select(AlertRow).where(*_alerts_of(departments))
    if since is not None:
        query = query.where(AlertRow.created_at >= since)
    if topic is not None:
        query = query.where(AlertRow.topic == topic)
    if acknowledged is not None:
        query = query.where(
            AlertRow.acknowledged_at.is_not(None) if acknowledged else AlertRow.acknowledged_at.is_(None)
        )
    if before_id is not None:
        query = query.where(AlertRow.id < before_id)
    return list(await session.scalars(query.order_by(AlertRow.id.desc()).limit(limit)))


async def alert_for_update(
    session: AsyncSession, alert_id: int, departments: Collection[str] | None
) -> AlertRow | None:
    """The alert, locked until the transaction ends, when it is one of `departments` (see _alerts_of)."""
    return await session.scalar(
        select(AlertRow).where(AlertRow.id == alert_id, *_alerts_of(departments)).with_for_update()
    )
