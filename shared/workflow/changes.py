"""Changes to one assignment: load it locked, move it between states, claim, unclaim, notes."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.apikeys import Actor, as_actor
from shared.db import ActivityRow, AssignmentRow, ReplyRow
from shared.workflow.states import (
    CLOSED,
    TRANSITIONS,
    Action,
    ClaimConflict,
    InvalidTransition,
    NotFound,
    Status,
    VersionMismatch,
)


async def load(
    session: AsyncSession, assignment_id: int, *, expected_version: int | None = None
) -> AssignmentRow:
    """The assignment, locked for the rest of the transaction; NotFound / VersionMismatch."""
    row = await session.scalar(
        select(AssignmentRow).where(AssignmentRow.id == assignment_id).with_for_update()
    )
    if row is None:
        raise NotFound(f"assignment {assignment_id} not found")
    if expected_version is not None and row.version != expected_version:
        raise VersionMismatch(
            f"assignment {assignment_id} is at version {row.version}, not {expected_version}: "
            "read it again before changing it"
        )
    return row


def touch(row: AssignmentRow, now: datetime) -> None:
    row.version += 1
    row.updated_at = now


def activity_record(
    row: AssignmentRow,
    action: str,
    *,
    actor: Actor,
    now: datetime,
    from_status: str | None = None,
    to_status: str | None = None,
    detail: dict[str, Any] | None = None,
) -> ActivityRow:
    return ActivityRow(
        mention_id=row.mention_id,
        assignment_id=row.id,
        department=row.department,
        action=action,
        actor=actor.name,
        actor_key_id=actor.key_id,
        actor_key_name=actor.key_name,
        from_status=from_status,
        to_status=to_status,
        detail=detail or {},
        at=now,
    )


async def transition(
    session: AsyncSession,
    assignment_id: int,
    action: Action,
    *,
    actor: Actor | str,
    now: datetime,
    expected_version: int | None = None,
    reply: dict[str, Any] | None = None,
) -> AssignmentRow:
    """Apply `action`. Repeating a transition that already happened (acknowledging an acknowledged
    assignment) changes nothing; `respond` always records its reply (`text`, `url`, `channel`)."""
    actor = as_actor(actor)
    row = await load(session, assignment_id, expected_version=expected_version)
    sources, target = TRANSITIONS[action]
    current = Status(row.status)
    if current == target and action is not Action.RESPOND:
        return row
    if current not in sources:
        allowed = ", ".join(sorted(s.value for s in sources))
        raise InvalidTransition(
            f"cannot {action.value} assignment {assignment_id}: it is {current.value} "
            f"({action.value} applies to: {allowed})"
        )
    row.status = target.value
    if action is Action.ACKNOWLEDGE:
        row.acknowledged_at = row.acknowledged_at or now
    elif action is Action.RESPOND:
        row.first_response_at = row.first_response_at or now
        row.next_escalation_at = None
    elif action in (Action.RESOLVE, Action.DISMISS):
        if action is Action.RESOLVE:
            row.resolved_at = now
        row.closed_at = now
        row.next_escalation_at = None
    elif action is Action.REOPEN:
        # A reopened assignment needs a new response: the SLA starts again.
        row.closed_at = None
        row.resolved_at = None
        row.sla_due_at = now + timedelta(minutes=row.sla_minutes)
        row.next_escalation_at = row.sla_due_at
    touch(row, now)
    detail: dict[str, Any] = {}
    if reply is not None:
        session.add(
            ReplyRow(
                assignment_id=row.id,
                mention_id=row.mention_id,
                department=row.department,
                text=reply["text"],
                url=reply.get("url"),
                channel=reply.get("channel"),
                author=actor.name,
                created_at=now,
            )
        )
        detail = {k: v for k, v in reply.items() if v is not None}
    session.add(
        activity_record(
            row,
            action.value,
            actor=actor,
            now=now,
            from_status=current.value,
            to_status=target.value,
            detail=detail,
        )
    )
    await session.flush()
    return row


async def claim(
    session: AsyncSession,
    assignment_id: int,
    *,
    assignee: str,
    actor: Actor | str,
    now: datetime,
    force: bool = False,
    expected_version: int | None = None,
) -> AssignmentRow:
    """`assignee` takes the assignment. Someone else's claim is refused (ClaimConflict) unless `force`."""
    actor = as_actor(actor)
    row = await load(session, assignment_id, expected_version=expected_version)
    if Status(row.status) in CLOSED:
        raise InvalidTransition(f"assignment {assignment_id} is {row.status}: reopen it before claiming it")
    if row.assignee == assignee:
        return row
    if row.assignee is not None and not force:
        since = f" since {row.claimed_at:%Y-%m-%d %H:%M}Z" if row.claimed_at is not None else ""
        raise ClaimConflict(
            f"assignment {assignment_id} is claimed by {row.assignee!r}{since}; "
            "claim with force to take it over"
        )
    previous = row.assignee
    row.assignee = assignee
    row.claimed_at = now
    touch(row, now)
    session.add(
        activity_record(
            row, "claimed", actor=actor, now=now, detail={"assignee": assignee, "previous_assignee": previous}
        )
    )
    await session.flush()
    return row


async def unclaim(
    session: AsyncSession,
    assignment_id: int,
    *,
    actor: Actor | str,
    now: datetime,
    force: bool = False,
    expected_version: int | None = None,
) -> AssignmentRow:
    """Give the assignment back. Only its assignee may, unless `force` (a guard against slips, not an
    access check: the display name is the caller's to choose, and any writer may force)."""
    actor = as_actor(actor)
    row = await load(session, assignment_id, expected_version=expected_version)
    if row.assignee is None:
        return row
    if row.assignee != actor.name and not force:
        raise ClaimConflict(
            f"assignment {assignment_id} is claimed by {row.assignee!r}, not {actor.name!r}; "
            "unclaim with force"
        )
    previous = row.assignee
    row.assignee = None
    row.claimed_at = None
    touch(row, now)
    session.add(
        activity_record(row, "unclaimed", actor=actor, now=now, detail={"previous_assignee": previous})
    )
    await session.flush()
    return row


async def add_note(
    session: AsyncSession, assignment_id: int, *, text: str, actor: Actor | str, now: datetime
) -> ActivityRow:
    row = await load(session, assignment_id)
    activity = activity_record(row, "note", actor=as_actor(actor), now=now, detail={"text": text})
    session.add(activity)
    await session.flush()
    return activity
