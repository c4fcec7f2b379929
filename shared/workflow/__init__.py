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

The modules: `states` (states, actions, transitions, errors), `changes` (one assignment's changes),
`reassign`, `escalation` and `outbox`. The API maps the errors to HTTP statuses; the workflow speaks none.
"""

from shared.workflow.changes import add_note, claim, load, transition, unclaim
from shared.workflow.escalation import escalate_due
from shared.workflow.outbox import add_to_outbox, relay_outbox
from shared.workflow.reassign import reassign
from shared.workflow.states import (
    AWAITING_RESPONSE,
    CE_SOURCE,
    CLOSED,
    OPEN,
    SLA,
    TRANSITIONS,
    Action,
    ClaimConflict,
    InvalidTransition,
    NotFound,
    Status,
    VersionMismatch,
    WorkflowError,
    raise_priority,
)

__all__ = [
    "AWAITING_RESPONSE",
    "CE_SOURCE",
    "CLOSED",
    "OPEN",
    "SLA",
    "TRANSITIONS",
    "Action",
    "ClaimConflict",
    "InvalidTransition",
    "NotFound",
    "Status",
    "VersionMismatch",
    "WorkflowError",
    "add_note",
    "add_to_outbox",
    "claim",
    "escalate_due",
    "load",
    "raise_priority",
    "reassign",
    "relay_outbox",
    "transition",
    "unclaim",
]
