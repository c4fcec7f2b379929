"""The assignment workflow: one assignment per (mention, department), each with its own state.

    new ──acknowledge──► acknowledged ──respond──► responded ──resolve──► resolved
     │                       │                                              │
     └──────── respond / resolve / dismiss (from any open state) ──► dismissed ──reopen──► reopened

Open states are new, acknowledged, responded and reopened; resolved, dismissed and reassigned are closed.
The SLA is the time to first response: it runs in new, acknowledged and reopened and stops with a response
(or when the assignment closes). An assignment past its SLA is escalated (`escalate_due`): one priority step
up, an event on the department's topic and on `mentions.escalations`, again after each further SLA period up
to a maximum level.

Every change bumps the assignment's `version` (its ETag), stamps the time of the transition and writes an
activity row with its actor: the API key that made the change (id and name) and a display name beside it
(`shared.apikeys.Actor`; a plain string is the system acting by itself, with no key). Events that
announce a change are written to the outbox in the same transaction and published by `relay_outbox`, so
a change and its event are never separated by a crash.

All functions work inside the caller's transaction and lock the assignment row (PostgreSQL) first.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.apikeys import Actor, as_actor
from shared.bus import Bus, OutMessage
from shared.bus.codec import encode
from shared.db import ActivityRow, AssignmentRow, CorrectionRow, MentionRow, OutboxRow, ReplyRow
from shared.events import (
    Classification,
    Department,
    Mention,
    MentionEscalated,
    MentionKind,
    Priority,
)
from shared.routed import RoutedTarget, routed_messages
from shared.settings import Settings

CE_SOURCE = "/mention-router/workflow"
# The actor of the escalations the workflow makes by itself: no key.
SLA = Actor(name="sla")


class Status(StrEnum):
    NEW = "new"
    ACKNOWLEDGED = "acknowledged"
    RESPONDED = "responded"
    RESOLVED = "resolved"
    DISMISSED = "dismissed"
    REOPENED = "reopened"
    REASSIGNED = "reassigned"


OPEN = frozenset({Status.NEW, Status.ACKNOWLEDGED, Status.RESPONDED, Status.REOPENED})
CLOSED = frozenset({Status.RESOLVED, Status.DISMISSED, Status.REASSIGNED})
# The SLA (time to first response) runs in these.
AWAITING_RESPONSE = frozenset({Status.NEW, Status.ACKNOWLEDGED, Status.REOPENED})


class Action(StrEnum):
    ACKNOWLEDGE = "acknowledge"
    RESPOND = "respond"
    RESOLVE = "resolve"
    DISMISS = "dismiss"
    REOPEN = "reopen"


# action → (states it may start from, state it leads to)
TRANSITIONS: dict[Action, tuple[frozenset[Status], Status]] = {
    Action.ACKNOWLEDGE: (frozenset({Status.NEW, Status.REOPENED}), Status.ACKNOWLEDGED),
    Action.RESPOND: (OPEN, Status.RESPONDED),
    Action.RESOLVE: (OPEN, Status.RESOLVED),
    Action.DISMISS: (OPEN, Status.DISMISSED),
    Action.REOPEN: (frozenset({Status.RESOLVED, Status.DISMISSED}), Status.REOPENED),
}


class WorkflowError(Exception):
    """A change the workflow refuses; `status` is the HTTP status the API answers with."""

    status = 409


class NotFound(WorkflowError):
    status = 404


class InvalidTransition(WorkflowError):
    status = 409


class ClaimConflict(WorkflowError):
    status = 409


class VersionMismatch(WorkflowError):
    """The assignment changed since the caller read it (If-Match)."""

    status = 412


def raise_priority(priority: str) -> str:
    """One step more urgent: P4 → P3 → P2 → P1 (P1 stays)."""
    return f"P{max(1, int(priority[1]) - 1)}"


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


def _touch(row: AssignmentRow, now: datetime) -> None:
    row.version += 1
    row.updated_at = now


def _activity(
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
    _touch(row, now)
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
        _activity(
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
    _touch(row, now)
    session.add(
        _activity(
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
    _touch(row, now)
    session.add(_activity(row, "unclaimed", actor=actor, now=now, detail={"previous_assignee": previous}))
    await session.flush()
    return row


async def add_note(
    session: AsyncSession, assignment_id: int, *, text: str, actor: Actor | str, now: datetime
) -> ActivityRow:
    row = await load(session, assignment_id)
    activity = _activity(row, "note", actor=as_actor(actor), now=now, detail={"text": text})
    session.add(activity)
    await session.flush()
    return activity


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
    _touch(row, now)
    session.add(
        _activity(
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
        _touch(target, now)
    else:
        opened_from = target.status  # it already had an open assignment: nothing to reopen
    session.add(
        _activity(
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
        _touch(row, now)
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
            _activity(
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


def add_to_outbox(session: AsyncSession, messages: Sequence[OutMessage], *, now: datetime) -> None:
    session.add_all(
        OutboxRow(topic=m.topic, key=m.key, value=m.value, headers=dict(m.headers), created_at=now)
        for m in messages
    )


async def relay_outbox(sessions: async_sessionmaker[AsyncSession], bus: Bus, *, limit: int = 500) -> int:
    """Publish what the outbox holds, oldest first, and delete it once the broker acknowledged it.
    At-least-once: a crash after the publish and before the delete publishes again (same ce_id)."""
    async with sessions() as session, session.begin():
        rows = list(
            await session.scalars(
                select(OutboxRow).order_by(OutboxRow.id).limit(limit).with_for_update(skip_locked=True)
            )
        )
        if not rows:
            return 0
        await bus.send(
            [OutMessage(topic=r.topic, key=r.key or "", value=r.value, headers=dict(r.headers)) for r in rows]
        )
        await session.execute(delete(OutboxRow).where(OutboxRow.id.in_([r.id for r in rows])))
    return len(rows)


def mention_from_row(row: MentionRow) -> Mention:
    """The mention as the router received it, rebuilt from its row (for replays and re-announcements)."""
    return Mention(
        id=row.id,
        source_id=row.source_id,
        source_name=row.source_name,
        kind=MentionKind(row.kind),
        url=row.url,
        title=row.title,
        text=row.text,
        author=row.author,
        author_url=row.author_url,
        published_at=row.published_at,
        in_reply_to=row.in_reply_to,
        language_hint=row.language_hint,
        influence=row.influence,
        content_hash=row.content_hash,
        near_duplicate_of=row.duplicate_of,
    )
