"""One assignment's life in the API bench's data: what happened to it by the time the data was generated
(acknowledged, responded, resolved or dismissed after log-normal delays; a few reopened, reassigned, or never
handled), and the escalations the router would have made when it went past its SLA."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.settings import DEPARTMENTS

PRIORITIES = ("P1", "P2", "P3", "P4")
ESCALATION_MAX = 3
ASSIGNEES = {d: [f"{d}-agent-{i}" for i in range(8)] for d in DEPARTMENTS}

# (action, to_status, at): the steps an assignment would take, whether or not they happened by `now`.
Plan = list[tuple[str, str, datetime]]


@dataclass
class Life:
    """What happened to an assignment by `now`: its status, timestamps and activity."""

    status: str
    priority: str
    sla_due_at: datetime | None = None
    acknowledged_at: datetime | None = None
    first_response_at: datetime | None = None
    resolved_at: datetime | None = None
    closed_at: datetime | None = None
    assignee: str | None = None
    reassigned_to: str | None = None
    escalation_level: int = 0
    escalated_at: datetime | None = None
    next_escalation_at: datetime | None = None
    updated_at: datetime | None = None
    # (action, from_status, to_status, at)
    events: list[tuple[str, str | None, str | None, datetime]] | None = None


def _delay(rng: random.Random, median_s: float, sigma: float = 0.9) -> timedelta:
    return timedelta(seconds=rng.lognormvariate(math.log(median_s), sigma))


def lifecycle(
    rng: random.Random, department: str, priority: str, sla_minutes: int, created: datetime, now: datetime
) -> Life:
    """Draw the assignment's plan (ack, response, close, perhaps a reopen and a second round) and keep the
    steps reached by `now`. Responses come at about half the SLA (a quarter of them late); a few are never
    handled. As in shared/workflow.py, a reopen starts the SLA again."""
    sla = sla_minutes * 60.0
    u = rng.random()
    assignee = rng.choice(ASSIGNEES[department])
    plan, reassign_to = _plan(rng, u, department, sla, created)
    life = Life(status="new", priority=priority, events=[])
    period, answered_in_period = _follow(
        life, plan, now, created=created, assignee=assignee, reassign_to=reassign_to
    )
    _escalate(life, priority, sla, now, created=created, period=period, answered_in_period=answered_in_period)
    assert life.events is not None
    life.events.sort(key=lambda e: e[3])
    return life


def _plan(
    rng: random.Random, u: float, department: str, sla: float, created: datetime
) -> tuple[Plan, str | None]:
    """The steps drawn for the outcome `u` (uniform in [0, 1)), and the department it is handed to, if."""
    plan: Plan = []
    reassign_to: str | None = None
    if u < 0.005:  # never handled: stays new, and past its SLA it escalates
        pass
    elif u < 0.205:  # dismissed as noise, usually without an answer
        at = created + _delay(rng, sla * 0.3)
        if rng.random() < 0.3:
            plan.append(("acknowledge", "acknowledged", at))
            at += _delay(rng, sla * 0.1)
        plan.append(("dismiss", "dismissed", at))
    elif u < 0.21:  # handed to another department
        at = created + _delay(rng, sla * 0.2)
        reassign_to = rng.choice([d for d in DEPARTMENTS if d != department])
        plan.append(("reassign", "reassigned", at))
    else:
        ack = created + _delay(rng, sla * 0.15)
        plan.append(("acknowledge", "acknowledged", ack))
        answered = ack + _delay(rng, sla * 0.3)
        plan.append(("respond", "responded", answered))
        if rng.random() < 0.92:
            closed = answered + _delay(rng, 86_400.0, 1.0)
            plan.append(("resolve", "resolved", closed))
            if rng.random() < 0.02:
                reopened = closed + _delay(rng, 3 * 86_400.0, 0.7)
                plan.append(("reopen", "reopened", reopened))
                if rng.random() < 0.85:
                    answered = reopened + _delay(rng, sla * 0.3)
                    plan.append(("respond", "responded", answered))
                    plan.append(("resolve", "resolved", answered + _delay(rng, 86_400.0, 1.0)))
    return plan, reassign_to


def _follow(
    life: Life, plan: Plan, now: datetime, *, created: datetime, assignee: str, reassign_to: str | None
) -> tuple[datetime, datetime | None]:
    """Apply the plan's steps reached by `now` to `life`; the start of the current SLA period (routing, or
    the last reopen) and the first response in it."""
    assert life.events is not None
    period = created
    answered_in_period: datetime | None = None
    for action, to_status, at in plan:
        if at > now:
            break
        life.events.append((action, life.status, to_status, at))
        life.status = to_status
        life.updated_at = at
        if action == "acknowledge":
            life.acknowledged_at = at
            life.assignee = assignee
        elif action == "respond":
            life.first_response_at = life.first_response_at or at
            answered_in_period = answered_in_period or at
        elif action == "resolve":
            life.resolved_at = life.closed_at = at
        elif action in ("dismiss", "reassign"):
            life.closed_at = at
            life.reassigned_to = reassign_to if action == "reassign" else None
        elif action == "reopen":
            life.resolved_at = life.closed_at = None
            period, answered_in_period = at, None
    return period, answered_in_period


def _escalate(
    life: Life,
    priority: str,
    sla: float,
    now: datetime,
    *,
    created: datetime,
    period: datetime,
    answered_in_period: datetime | None,
) -> None:
    """The SLA of the current period, and its escalations: one priority step per SLA period past due
    without a response, up to the maximum."""
    assert life.events is not None
    due = period + timedelta(seconds=sla)
    life.sla_due_at = due
    awaiting = life.status in ("new", "acknowledged", "reopened")
    stopped = answered_in_period or life.closed_at or now
    if stopped > due:
        level = min(ESCALATION_MAX, 1 + int((stopped - due).total_seconds() // sla))
        life.escalation_level = level
        life.escalated_at = due + timedelta(seconds=sla * (level - 1))
        life.priority = PRIORITIES[max(0, PRIORITIES.index(priority) - level)]
        for k in range(level):
            life.events.append(("escalate", None, None, due + timedelta(seconds=sla * k)))
        life.updated_at = max(life.updated_at or created, life.escalated_at)
    if awaiting:
        life.next_escalation_at = (
            due + timedelta(seconds=sla * life.escalation_level)
            if life.escalation_level < ESCALATION_MAX
            else None
        )
