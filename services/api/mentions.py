"""Mentions for the departments' tools: the list (filtered, sorted, paged by cursor) and one mention with
its routing trail, activity, replies and corrections.

Beside it: exports.py (the list as a file), corrections.py (a department corrects the labels), queues.py
(what waits for each department), threads.py (a mention's relatives). The SQL of all of them is in
services/api/queries/; what a key sees of a mention is decided there, in SQL.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import Field

from services.api import conditional
from services.api.assignments import ActivityPublic, ReplyPublic
from services.api.auth import PrincipalDep
from services.api.corrections import CorrectionPublic, correction_public
from services.api.deps import SessionDep
from services.api.exports import exports_api
from services.api.mention_filters import FiltersDep, Sort
from services.api.queries import mentions as queries
from services.api.queries import validators
from services.api.schemas import AssignmentPublic, MentionPage, MentionPublic, from_row, json_bytes
from shared.events import utcnow

mentions_api = APIRouter(prefix="/v1", tags=["mentions"])


_CONDITIONAL: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified: the `If-None-Match` (or `If-Modified-Since`) copy is current"}
}


@mentions_api.get(
    "/mentions",
    response_model=MentionPage,
    responses={403: {"description": "A department outside the key's scopes"}, **_CONDITIONAL},
)
async def list_mentions(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    f: FiltersDep,
    sort: Sort = Sort.ROUTED_DESC,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    """Mentions in the caller's departments, filtered and sorted; pass `next_cursor` back as `cursor`
    (with the same filters and sort) for the next page. Filters on assignments (status, priority,
    overdue, assignee) select mentions with one assignment matching all of them in the departments
    asked for (or all the key may read).

    The answer carries an `ETag`; send it back as `If-None-Match` to get a 304 without a body when the
    page would show the same mentions, labels and assignments (docs/api.md#polling)."""
    now = utcnow()
    if conditional.none_match(request) is not None:
        light, light_cursor = await queries.page(session, principal, f, sort, cursor, limit, light=True)
        tag = validators.page_tag(principal, light, light_cursor, now)
        if conditional.is_fresh(request, tag):
            return conditional.not_modified(tag)
    items, next_cursor = await queries.page(session, principal, f, sort, cursor, limit)
    tag = validators.page_tag(principal, items, next_cursor, now)
    # Written here rather than through MentionPage: validating and serialising 50 mentions with their
    # evidence through pydantic was a third of the API's CPU on a list (the document still declares
    # MentionPage, and the schema tests check the bodies against it).
    return conditional.json_response(json_bytes({"items": items, "next_cursor": next_cursor}), tag)


# Before the route of one mention: `/mentions/export` is not a mention id.
mentions_api.include_router(exports_api)


class MentionDetail(MentionPublic):
    matched_rules: list[str] = Field(
        description="Every routing rule that matched, in order; for a key of some departments only, the "
        "rules that routed the mention to one of them."
    )
    rules_version: int | None = Field(description="The rule set version that routed it.")
    activity: list[ActivityPublic]
    replies: list[ReplyPublic]
    corrections: list[CorrectionPublic]


@mentions_api.get(
    "/mentions/{mention_id}",
    response_model=MentionDetail,
    responses={404: {"description": "No such mention"}, **_CONDITIONAL},
)
async def get_mention(
    request: Request, session: SessionDep, principal: PrincipalDep, mention_id: str
) -> Response:
    """One mention: labels with evidence, the routing trail (rules, version, tags), its assignments in the
    caller's departments with their activity and replies, and the corrections made for them.

    `ETag` and `Last-Modified` change with any of those (and when an assignment becomes overdue); a
    conditional request whose copy is current gets a 304 (docs/api.md#polling)."""
    now = utcnow()
    # (A copy services/api/revalidate.py found stale is not checked again.)
    conditional_get = conditional.none_match(request) is not None or "if-modified-since" in request.headers
    if conditional_get and not request.scope.get(conditional.STALE_COPY):
        state = await validators.detail_state(session, principal, mention_id)
        if state is not None:
            tag, modified = validators.detail_tag(principal, mention_id, state, now)
            if conditional.is_fresh(request, tag, modified):
                return conditional.not_modified(tag, modified)
    mention = await queries.mention_view(session, principal, mention_id)
    assignments = (await queries.assignments_of(session, principal, [mention.id], now))[mention.id]
    readable = sorted(principal.readable)
    activity = await queries.activity_of(session, mention.id, readable)
    replies = await queries.replies_of(session, mention.id, readable)
    corrections = await queries.corrections_of(session, mention.id)
    matched = list(mention.matched_rules)
    if not principal.all_departments:
        # Every rule that routed a department is named by that department's assignment.
        routed_here = {rule for a in assignments for rule in a["rules"]}
        matched = [rule for rule in matched if rule in routed_here]
    shown = (correction_public(c, principal) for c in corrections)
    detail = from_row(
        MentionDetail,
        mention,
        assignments=[AssignmentPublic.model_validate(a) for a in assignments],
        matched_rules=matched,
        activity=[ActivityPublic.model_validate(a) for a in activity],
        replies=[ReplyPublic.model_validate(r) for r in replies],
        corrections=[c for c in shown if c is not None],
    )
    tag, modified = validators.detail_tag(
        principal,
        mention.id,
        validators.detail_state_of(mention.routed_at, assignments, activity, replies, corrections),
        now,
    )
    if conditional.is_fresh(request, tag, modified):
        return conditional.not_modified(tag, modified)  # a database without the fast path gets here
    # Written by the model itself: FastAPI would validate it once more against the response model.
    return conditional.json_response(detail.model_dump_json().encode(), tag, modified)
