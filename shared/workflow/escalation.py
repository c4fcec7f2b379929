"""SLA escalation: assignments past their time to first response go one priority step up."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.bus import OutMessage
from shared.bus.codec import encode
from shared.db import AssignmentRow, MentionRow
from shared.events import (
    Department,
    MentionEscalated,
    Priority,
)
from shared.settings import Settings
from shared.workflow.changes import activity_record, touch
from shared.workflow.outbox import add_to_outbox
from shared.workflow.states import AWAITING_RESPONSE, CE_SOURCE, SLA, raise_priority


async def escalate_due(
    session: AsyncSession, *, now: datetime, settings: Settings, limit: int = 500
) -> list[MentionEscalated]:
    """Escalate up to `limit` assignments whose SLA ran out without a first response. Replicas running this
    at once escalate each assignment once (rows are locked, and locked rows skipped, on PostgreSQL)."""
    query = (
        select(AssignmentRow, MentionRow.title, MentionRow.url)
        .join(MentionRow, MentionRow.id == AssignmentRow.mention_id)
        .where(
            AssignmentRow.next_escalation_at.is_not(None),
            AssignmentRow.next_escalation_at <= now,
            AssignmentRow.status.in_([s.value for s in AWAITING_RESPONSE]),
        )
        .order_by(AssignmentRow.next_escalation_at)
        .limit(limit)
        .with_for_update(skip_locked=True, of=AssignmentRow)
    )
    events: list[MentionEscalated] = []
    out: list[OutMessage] = []
    for row, title, url in (await session.execute(query)).all():
        previous = row.priority
        row.priority = raise_priority(previous)
        row.escalation_level += 1
        row.escalated_at = now
        row.next_escalation_at = (
            now + timedelta(minutes=row.sla_minutes)
            if row.escalation_level < settings.router_escalation_max_level
            else None
        )
        touch(row, now)
        event = MentionEscalated(
            mention_id=row.mention_id,
            department=Department(row.department),
            title=title,
            url=url,
            status=row.status,
            assignee=row.assignee,
            previous_priority=Priority(previous),
            priority=Priority(row.priority),
            escalation_level=row.escalation_level,
            sla_due_at=row.sla_due_at,
            escalated_at=now,
        )
        session.add(
            activity_record(
                row,
                "escalated",
                actor=SLA,
                now=now,
                detail={
                    "level": row.escalation_level,
                    "from_priority": previous,
                    "to_priority": row.priority,
                },
            )
        )
        event_id = f"{row.mention_id}:{row.department}:escalated:{row.escalation_level}"
        for topic in (settings.topic_routed(row.department), settings.topic_escalations):
            out.append(
                encode(topic=topic, key=row.mention_id, event=event, source=CE_SOURCE, event_id=event_id)
            )
        events.append(event)
    add_to_outbox(session, out, now=now)
    await session.flush()
    return events
