"""The assignment workflow over REST: acknowledge, claim, respond, resolve, dismiss, reopen, reassign, notes.

Every change answers with the assignment and its ETag; send the ETag back as If-Match to make the change
conditional (412 when someone changed the assignment in between). The rules live in shared/workflow.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Response, status
from fastapi import Path as PathParam
from pydantic import AnyHttpUrl, BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.auth import PrincipalDep, check_write
from services.api.deps import ActorDep, SessionDep, SettingsDep
from services.api.inputs import LAX, RequestModel
from services.api.problems import workflow_problem
from services.api.queries import assignments as queries
from services.api.queries import mentions as mention_queries
from services.api.schemas import ActingKey, AssignmentPublic, RowModel, from_row, overdue
from shared.apikeys import Principal
from shared.db import AssignmentRow, MentionRow
from shared.events import Department, utcnow
from shared.workflow import (
    Action,
    WorkflowError,
    add_note,
    claim,
    reassign,
    transition,
    unclaim,
)

assignments_api = APIRouter(prefix="/v1", tags=["assignments"])

# Ids are PostgreSQL integers: anything outside 1..2^31-1 is a 422, not a database error.
AssignmentId = Annotated[int, PathParam(ge=1, le=2_147_483_647, description="The assignment's id.")]

IfMatch = Annotated[
    str | None,
    Header(max_length=100, description="The ETag you read; the change is refused with 412 if it moved on."),
]

_ERRORS: dict[int | str, dict[str, str]] = {
    404: {"description": "No such assignment"},
    409: {"description": "Not allowed in the assignment's state, or claimed by someone else"},
    412: {"description": "The assignment changed since the ETag given in If-Match"},
}


class TransitionBody(RequestModel):
    comment: str | None = Field(default=None, max_length=10_000, description="Kept in the activity log.")


class ReplyBody(RequestModel):
    """The answer given to the community, recorded with the assignment."""

    text: str = Field(min_length=1, max_length=20_000)
    url: AnyHttpUrl | None = Field(default=None, description="Where the reply was posted.")
    channel: str | None = Field(default=None, max_length=100, description="e.g. blog-comment, email, x")


class ClaimBody(RequestModel):
    assignee: str | None = Field(
        default=None, min_length=1, max_length=200, description="Default: the actor."
    )
    force: bool = Field(default=False, description="Take it over from whoever holds it.")


class UnclaimBody(RequestModel):
    force: bool = False


class ReassignBody(RequestModel):
    department: Annotated[Department, LAX]
    reason: str = Field(default="", max_length=2000)


class NoteBody(RequestModel):
    text: str = Field(min_length=1, max_length=20_000)


class ActivityPublic(RowModel):
    id: int
    assignment_id: int | None
    department: str
    action: str
    actor: str = Field(description="Display name: X-Actor, else the key's name; `sla` for escalations.")
    actor_key: ActingKey | None = Field(
        description="The API key that made the change; null for the system's own and for older records."
    )
    from_status: str | None
    to_status: str | None
    detail: dict[str, object]
    at: datetime


class ActivityLog(BaseModel):
    items: list[ActivityPublic]


class ReplyPublic(RowModel):
    id: int
    assignment_id: int
    department: str
    text: str
    url: str | None
    channel: str | None
    author: str
    created_at: datetime


class AssignmentDetail(AssignmentPublic):
    mention_id: str
    replies: list[ReplyPublic]


class Reassignment(BaseModel):
    closed: AssignmentPublic
    opened: AssignmentPublic


async def scoped(session: AsyncSession, principal: Principal, assignment_id: int, *, write: bool) -> str:
    """The assignment's department, if the caller may see it (else 404: it does not exist for them), and
    may change it when `write` (else 403). An assignment's department never changes."""
    department = await queries.department_of(session, assignment_id, sorted(principal.readable))
    if department is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"assignment {assignment_id} not found")
    if write:
        check_write(principal, department)
    return department


def etag(row: AssignmentRow) -> str:
    return f'"{row.id}-{row.version}"'


def expected_version(assignment_id: int, if_match: str | None) -> int | None:
    if if_match is None or if_match.strip() == "*":
        return None
    value = if_match.strip().removeprefix("W/").strip('"')
    ident, _, version = value.partition("-")
    if ident != str(assignment_id) or not version.isdigit():
        raise HTTPException(
            status.HTTP_412_PRECONDITION_FAILED,
            f"If-Match {if_match!r} is not an ETag of assignment {assignment_id}",
        )
    return int(version)


def assignment_public(a: AssignmentRow) -> AssignmentPublic:
    """The assignment as the API shows it: the row's columns and `overdue`, which the row does not hold
    (it depends on the time of the request)."""
    return from_row(AssignmentPublic, a, overdue=_overdue(a))


def _overdue(a: AssignmentRow) -> bool:
    return overdue(
        status=a.status, first_response_at=a.first_response_at, sla_due_at=a.sla_due_at, now=utcnow()
    )


async def _change(
    session: SessionDep, response: Response, apply: Callable[[], Awaitable[AssignmentRow]]
) -> AssignmentPublic:
    try:
        row = await apply()
        await session.commit()
    except WorkflowError as exc:
        await session.rollback()
        raise workflow_problem(exc) from exc
    response.headers["ETag"] = etag(row)
    return assignment_public(row)


@assignments_api.get("/assignments/{assignment_id}", response_model=AssignmentDetail, responses=_ERRORS)
async def get_assignment(
    session: SessionDep, principal: PrincipalDep, response: Response, assignment_id: AssignmentId
) -> AssignmentDetail:
    """One assignment with its replies; the ETag header is what If-Match takes."""
    await scoped(session, principal, assignment_id, write=False)
    row = await session.get(AssignmentRow, assignment_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"assignment {assignment_id} not found")
    replies = await queries.replies_to(session, assignment_id)
    response.headers["ETag"] = etag(row)
    replied = [ReplyPublic.model_validate(r) for r in replies]
    return from_row(AssignmentDetail, row, overdue=_overdue(row), replies=replied)


def _transition_route(action: Action, summary: str) -> None:
    async def route(
        session: SessionDep,
        principal: PrincipalDep,
        actor: ActorDep,
        response: Response,
        assignment_id: AssignmentId,
        if_match: IfMatch = None,
        body: TransitionBody | None = None,
    ) -> AssignmentPublic:
        version = expected_version(assignment_id, if_match)
        await scoped(session, principal, assignment_id, write=True)

        async def apply() -> AssignmentRow:
            row = await transition(
                session, assignment_id, action, actor=actor, now=utcnow(), expected_version=version
            )
            if body is not None and body.comment:  # kept as a note beside the transition
                await add_note(session, assignment_id, text=body.comment, actor=actor, now=utcnow())
            return row

        return await _change(session, response, apply)

    route.__name__ = f"{action.value}_assignment"
    route.__doc__ = summary
    assignments_api.post(
        f"/assignments/{{assignment_id}}/{action.value}", response_model=AssignmentPublic, responses=_ERRORS
    )(route)


_transition_route(
    Action.ACKNOWLEDGE, "Acknowledge: someone is looking at it (new or reopened → acknowledged)."
)
_transition_route(Action.RESOLVE, "Resolve: nothing more to do (any open state → resolved).")
_transition_route(Action.DISMISS, "Dismiss: not for this department or not worth an answer (→ dismissed).")
_transition_route(Action.REOPEN, "Reopen a resolved or dismissed assignment; its SLA starts again.")


@assignments_api.post(
    "/assignments/{assignment_id}/respond", response_model=AssignmentPublic, responses=_ERRORS
)
async def respond(
    session: SessionDep,
    principal: PrincipalDep,
    actor: ActorDep,
    response: Response,
    assignment_id: AssignmentId,
    body: ReplyBody,
    if_match: IfMatch = None,
) -> AssignmentPublic:
    """Record the reply given to the community (→ responded); the first one stops the SLA clock."""
    version = expected_version(assignment_id, if_match)
    await scoped(session, principal, assignment_id, write=True)
    reply = {"text": body.text, "url": str(body.url) if body.url else None, "channel": body.channel}
    return await _change(
        session,
        response,
        lambda: transition(
            session,
            assignment_id,
            Action.RESPOND,
            actor=actor,
            now=utcnow(),
            expected_version=version,
            reply=reply,
        ),
    )


@assignments_api.post(
    "/assignments/{assignment_id}/claim", response_model=AssignmentPublic, responses=_ERRORS
)
async def claim_assignment(
    session: SessionDep,
    principal: PrincipalDep,
    actor: ActorDep,
    response: Response,
    assignment_id: AssignmentId,
    body: ClaimBody | None = None,
    if_match: IfMatch = None,
) -> AssignmentPublic:
    """Take the assignment. Someone else's claim answers 409 unless `force` is set."""
    body = body or ClaimBody()
    version = expected_version(assignment_id, if_match)
    await scoped(session, principal, assignment_id, write=True)
    return await _change(
        session,
        response,
        lambda: claim(
            session,
            assignment_id,
            assignee=body.assignee or actor.name,
            actor=actor,
            now=utcnow(),
            force=body.force,
            expected_version=version,
        ),
    )


@assignments_api.post(
    "/assignments/{assignment_id}/unclaim", response_model=AssignmentPublic, responses=_ERRORS
)
async def unclaim_assignment(
    session: SessionDep,
    principal: PrincipalDep,
    actor: ActorDep,
    response: Response,
    assignment_id: AssignmentId,
    body: UnclaimBody | None = None,
    if_match: IfMatch = None,
) -> AssignmentPublic:
    """Give the assignment back; only its assignee may, unless `force`."""
    force = body.force if body else False
    version = expected_version(assignment_id, if_match)
    await scoped(session, principal, assignment_id, write=True)
    return await _change(
        session,
        response,
        lambda: unclaim(
            session, assignment_id, actor=actor, now=utcnow(), force=force, expected_version=version
        ),
    )


@assignments_api.post("/assignments/{assignment_id}/reassign", response_model=Reassignment, responses=_ERRORS)
async def reassign_assignment(
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    actor: ActorDep,
    response: Response,
    assignment_id: AssignmentId,
    body: ReassignBody,
    if_match: IfMatch = None,
) -> Reassignment:
    """Hand the mention to another department: this assignment closes (reassigned), the other department
    gets one (or its earlier one reopens) and its topic gets the mention; recorded as a routing correction."""
    version = expected_version(assignment_id, if_match)
    await scoped(session, principal, assignment_id, write=True)
    try:
        closed, opened = await reassign(
            session,
            assignment_id,
            department=body.department,
            actor=actor,
            now=utcnow(),
            settings=settings,
            reason=body.reason,
            expected_version=version,
        )
        await session.commit()
    except WorkflowError as exc:
        await session.rollback()
        raise workflow_problem(exc) from exc
    response.headers["ETag"] = etag(closed)
    return Reassignment(closed=assignment_public(closed), opened=assignment_public(opened))


@assignments_api.post(
    "/assignments/{assignment_id}/notes",
    response_model=ActivityPublic,
    status_code=status.HTTP_201_CREATED,
    responses={404: {"description": "No such assignment"}},
)
async def note(
    session: SessionDep, principal: PrincipalDep, actor: ActorDep, assignment_id: AssignmentId, body: NoteBody
) -> ActivityPublic:
    """An internal note on the assignment (not sent to anyone)."""
    await scoped(session, principal, assignment_id, write=True)
    try:
        row = await add_note(session, assignment_id, text=body.text, actor=actor, now=utcnow())
        await session.commit()
    except WorkflowError as exc:
        raise workflow_problem(exc) from exc
    return ActivityPublic.model_validate(row)


@assignments_api.get(
    "/mentions/{mention_id}/activity",
    response_model=ActivityLog,
    tags=["mentions"],
    responses={404: {"description": "No such mention"}},
)
async def activity(session: SessionDep, principal: PrincipalDep, mention_id: str) -> ActivityLog:
    """Everything that happened to the mention's assignments in the caller's departments, oldest first."""
    readable = sorted(principal.readable)
    visible = await queries.assigned_in(session, mention_id, readable)
    if not visible and not (principal.is_admin and await session.get(MentionRow, mention_id) is not None):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"mention {mention_id!r} not found")
    rows = await mention_queries.activity_of(session, mention_id, readable)
    return ActivityLog(items=[ActivityPublic.model_validate(r) for r in rows])
