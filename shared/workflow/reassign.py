"""Reassigning a mention from one department to another, in named steps."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.apikeys import Actor, as_actor
from shared.bus import OutMessage
from shared.db import AssignmentRow, CorrectionRow, MentionRow
from shared.events import (
    Classification,
    Department,
)
from shared.mentionrows import mention_from_row
from shared.routed import RoutedTarget, routed_messages
from shared.settings import Settings
from shared.workflow.changes import activity_record, load, touch
from shared.workflow.outbox import add_to_outbox
from shared.workflow.states import CE_SOURCE, CLOSED, OPEN, InvalidTransition, NotFound, Status


async def reassign(
    session: AsyncSession,
    assignment_id: int,
    *,
    department: Department,
    actor: Actor | str,
    now: datetime,
    settings: Settings,
    reason: str = "",
    expected_version: int | None = None,
) -> tuple[AssignmentRow, AssignmentRow]:
    """Close this department's assignment and open one for `department` (reopening its earlier one if it
    had one), log both, record a routing correction, and announce the new assignment on the department's
    topic (through the outbox). Returns (closed, opened)."""
    actor = as_actor(actor)
    row = await load(session, assignment_id, expected_version=expected_version)
    if Status(row.status) in CLOSED:
        raise InvalidTransition(
            f"assignment {assignment_id} is {row.status}: reopen it before reassigning it"
        )
    if row.department == department.value:
        raise InvalidTransition(f"assignment {assignment_id} already belongs to {department.value}")
    mention = await session.get(MentionRow, row.mention_id)
    if mention is None:  # pragma: no cover - the foreign key keeps them together
        raise NotFound(f"mention {row.mention_id} not found")
    before = await _open_departments(session, row.mention_id)
    _close_as_reassigned(session, row, department, actor=actor, now=now, reason=reason)
    target = await _open_for(session, row, department, actor=actor, now=now, reason=reason)
    after = await _open_departments(session, row.mention_id)
    session.add(
        CorrectionRow(
            mention_id=row.mention_id,
            field="departments",
            value=after,
            previous=before,
            actor=actor.name,
            actor_key_id=actor.key_id,
            actor_key_name=actor.key_name,
            # The two departments it concerns; the lists above are cut to the reader's departments.
            departments=sorted({row.department, department.value}),
            created_at=now,
        )
    )
    add_to_outbox(session, _announce(settings, mention, target, after, now=now), now=now)
    await session.flush()
    return row, target


def _close_as_reassigned(
    session: AsyncSession,
    row: AssignmentRow,
    department: Department,
    *,
    actor: Actor,
    now: datetime,
    reason: str,
) -> None:
    previous_status = row.status
    row.status = Status.REASSIGNED.value
    row.reassigned_to = department.value
    row.closed_at = now
    row.next_escalation_at = None
    touch(row, now)
    session.add(
        activity_record(
            row,
            "reassigned",
            actor=actor,
            now=now,
            from_status=previous_status,
            to_status=Status.REASSIGNED.value,
            detail={"to": department.value, "reason": reason},
        )
    )


async def _open_for(
    session: AsyncSession,
    row: AssignmentRow,
    department: Department,
    *,
    actor: Actor,
    now: datetime,
    reason: str,
) -> AssignmentRow:
    """The department's assignment of the mention: a new one, its closed one reopened, or its open one."""
    target = await session.scalar(
        select(AssignmentRow)
        .where(AssignmentRow.mention_id == row.mention_id, AssignmentRow.department == department.value)
        .with_for_update()
    )
    sla_due = now + timedelta(minutes=row.sla_minutes)
    if target is None:
        target = AssignmentRow(
            mention_id=row.mention_id,
            department=department.value,
            priority=row.priority,
            status=Status.NEW.value,
            sla_due_at=sla_due,
            sla_minutes=row.sla_minutes,
            next_escalation_at=sla_due,
            assignee=None,
            rules=[f"reassigned from {row.department}"],
            tags=list(row.tags),
            created_at=now,
            updated_at=now,
            routed_at=row.routed_at,
            version=1,
        )
        session.add(target)
        await session.flush()
        opened_from: str | None = None
    elif Status(target.status) in CLOSED:
        opened_from = target.status
        target.status = Status.REOPENED.value
        target.closed_at = None
        target.resolved_at = None
        target.reassigned_to = None
        target.sla_due_at = sla_due
        target.next_escalation_at = sla_due
        touch(target, now)
    else:
        opened_from = target.status  # it already had an open assignment: nothing to reopen
    session.add(
        activity_record(
            target,
            "reassigned_in",
            actor=actor,
            now=now,
            from_status=opened_from,
            to_status=target.status,
            detail={"from": row.department, "reason": reason},
        )
    )
    return target


def _announce(
    settings: Settings, mention: MentionRow, target: AssignmentRow, departments: list[str], *, now: datetime
) -> list[OutMessage]:
    """The reassigned mention on its new department's topic, built as the router builds it."""
    return routed_messages(
        settings,
        source=CE_SOURCE,
        mention=mention_from_row(mention).model_dump(mode="json"),
        classification=Classification.model_validate(mention.classification).model_dump(mode="json"),
        all_departments=departments,
        ingested_at=mention.ingested_at,
        routed_at=now,
        matched_rules=list(mention.matched_rules),
        rules_version=mention.rules_version,
        tags=list(target.tags),
        targets=[
            RoutedTarget(
                department=target.department,
                priority=target.priority,
                sla_minutes=target.sla_minutes,
                rules=list(target.rules),
                sla_due_at=target.sla_due_at,
                event_id=f"{mention.id}:{target.department}:reassigned:{target.version}",
            )
        ],
    )


async def _open_departments(session: AsyncSession, mention_id: str) -> list[str]:
    rows = await session.scalars(
        select(AssignmentRow.department)
        .where(
            AssignmentRow.mention_id == mention_id,
            AssignmentRow.status.in_([s.value for s in OPEN]),
        )
        .order_by(AssignmentRow.priority, AssignmentRow.department)
    )
    return list(rows)
