"""Routing rules: versions, activation with an audit trail, a dry run and a shadow replay."""

from __future__ import annotations

import functools
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from services.api.auth import AdminDep, PrincipalDep
from services.api.deps import ActorDep, SessionDep, SettingsDep
from services.api.inputs import LAX, RequestModel, strict_json
from services.api.problems import ProblemException
from services.api.queries import assignments as assignment_queries
from services.api.queries import rules as queries
from services.api.schemas import ActingKey, RowModel, acting_key, from_row
from shared.classify import RuleEngine, Taxonomy
from shared.db import MentionRow, RuleSetRow
from shared.errors import ConfigError
from shared.events import Classification, Mention, MentionKind, utcnow
from shared.mentionrows import mention_from_row
from shared.routing import Decision, RuleError, RuleSet
from shared.rulestore import UnknownVersion, activate, active_rule_set, compile_rules, create_version
from shared.settings import Settings

rules_api = APIRouter(prefix="/v1/routing-rules", tags=["routing rules"])

Version = Annotated[int, PathParam(ge=1, le=2_147_483_647, description="A rule set version.")]

_INVALID: dict[int | str, dict[str, Any]] = {
    422: {"description": "The rule set does not validate; `detail` points at the rule"}
}


class RuleSetCreate(RequestModel):
    rules: dict[str, Any] = Field(
        description="The rule set: `{fallback: {...}, rules: [...]}`, as in config/routing.yaml."
    )
    comment: str = Field(default="", max_length=2000)


class RuleSetVersion(RowModel):
    version: int
    active: bool
    comment: str
    created_at: datetime
    created_by: str
    created_by_key: ActingKey | None = Field(description="The API key that created it (null: seeded).")
    activated_at: datetime | None
    activated_by: str | None
    activated_by_key: ActingKey | None
    rules: dict[str, Any] | None = Field(default=None, description="The rule set (omitted in listings).")


class RuleSetVersions(BaseModel):
    items: list[RuleSetVersion]


class ActivationPublic(BaseModel):
    version: int
    previous_version: int | None
    activated_by: str
    activated_by_key: ActingKey | None
    activated_at: datetime


class AuditEntry(RowModel):
    action: str
    version: int
    previous_version: int | None
    actor: str = Field(description="Display name: X-Actor, else the key's name.")
    actor_key: ActingKey | None = Field(
        description="The API key that did it; null for the seed and for records older than the keys."
    )
    at: datetime


class AuditLog(BaseModel):
    items: list[AuditEntry]


class MentionDraft(RequestModel):
    """A mention to try the rules on; without a classification the API classifies it (rule engine)."""

    title: str = Field(default="", max_length=1_000)
    text: str = Field(default="", max_length=100_000)
    author: str = Field(default="", max_length=300)
    source_id: str = Field(default="dry-run", min_length=1, max_length=64)
    kind: Annotated[MentionKind, LAX] = MentionKind.POST
    influence: int = Field(default=1, ge=1, le=3)
    language: str | None = Field(default=None, min_length=2, max_length=8)


class DryRunRequest(RequestModel):
    mention_id: str | None = Field(
        default=None, max_length=64, description="A stored mention to route again."
    )
    mention: MentionDraft | None = None
    classification: Annotated[Classification, strict_json(Classification)] | None = Field(
        default=None, description="Labels to route on instead of classifying `mention`."
    )
    rules: dict[str, Any] | None = Field(default=None, description="A candidate rule set; default: active.")
    version: int | None = Field(
        default=None, ge=1, le=2_147_483_647, description="A stored version to try; default: the active one."
    )


class AssignmentOutcome(BaseModel):
    department: str
    priority: str
    sla_minutes: int
    rules: list[str]


class RuleMatchPublic(BaseModel):
    rule: str
    conditions: list[str] = Field(description="The conditions that held.")


class DryRunResult(BaseModel):
    rules_version: int | None = Field(description="The stored version tried; null for a candidate body.")
    mention_id: str | None
    classification: Classification
    matched: list[RuleMatchPublic]
    assignments: list[AssignmentOutcome]
    departments: list[str]
    tags: list[str]


class ReplayRequest(RequestModel):
    rules: dict[str, Any] | None = Field(default=None, description="The candidate rule set.")
    version: int | None = Field(
        default=None, ge=1, le=2_147_483_647, description="A stored version as the candidate."
    )
    limit: int = Field(default=1000, ge=1, description="How many of the latest stored mentions to replay.")


class DepartmentChange(BaseModel):
    before: int = Field(description="Mentions the active rules give this department.")
    after: int = Field(description="Mentions the candidate gives it.")
    gained: int
    lost: int


class MentionChange(BaseModel):
    mention_id: str
    title: str
    before: list[str] = Field(description="department:priority under the active rules")
    after: list[str] = Field(description="department:priority under the candidate")


class ReplayResult(BaseModel):
    active_version: int | None
    candidate_version: int | None
    examined: int
    changed: int
    by_department: dict[str, DepartmentChange]
    changed_rules: dict[str, int] = Field(description="How often each rule matched: candidate minus active.")
    examples: list[MentionChange] = Field(description="Up to 100 of the changed mentions, newest first.")


def _known_topics(settings: Settings) -> list[str]:
    return list(_taxonomy(settings.taxonomy_file).topics)


@functools.lru_cache(maxsize=4)
def _taxonomy(path: Any) -> Taxonomy:
    return Taxonomy.from_file(path)


@functools.lru_cache(maxsize=4)
def _engine(path: Any) -> RuleEngine:
    return RuleEngine(_taxonomy(path))


def _invalid(exc: ConfigError) -> ProblemException:
    """422 naming the rule: the problem body carries `rule_index`, `rule`, `field` and `reason` too."""
    extra = exc.as_dict() if isinstance(exc, RuleError) else {}
    return ProblemException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc), extra=extra)


def _version_public(row: RuleSetRow, *, body: bool) -> RuleSetVersion:
    """The version as the API shows it: the row's columns, and the rules (the row's `body`) only with
    `body` (listings leave them out)."""
    return from_row(RuleSetVersion, row, rules=dict(row.body) if body else None)


async def _rule_set(
    session: SessionDep, settings: Settings, *, body: dict[str, Any] | None, version: int | None
) -> tuple[RuleSet, int | None]:
    """The candidate body, a stored version, or the active set."""
    topics = _known_topics(settings)
    if body is not None and version is not None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "give `rules` or `version`, not both")
    if body is not None:
        try:
            return compile_rules(body, known_topics=topics, version=0, where="candidate"), None
        except ConfigError as exc:
            raise _invalid(exc) from exc
    row = await (session.get(RuleSetRow, version) if version is not None else active_rule_set(session))
    if row is None:
        what = f"routing rule set version {version}" if version is not None else "an active routing rule set"
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"there is no {what}")
    try:
        return compile_rules(row.body, known_topics=topics, version=row.version), row.version
    except ConfigError as exc:  # a stored set the current taxonomy no longer accepts
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc


@rules_api.get("", response_model=RuleSetVersion, responses={404: {"description": "No active rule set yet"}})
async def get_active(session: SessionDep, principal: PrincipalDep) -> RuleSetVersion:
    """The active rule set (the router seeds version 1 from config/routing.yaml on its first start)."""
    row = await active_rule_set(session)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no routing rule set is active yet")
    return _version_public(row, body=True)


@rules_api.get("/versions", response_model=RuleSetVersions)
async def list_versions(session: SessionDep, principal: PrincipalDep) -> RuleSetVersions:
    rows = await queries.versions(session)
    return RuleSetVersions(items=[_version_public(r, body=False) for r in rows])


@rules_api.get(
    "/versions/{version}", response_model=RuleSetVersion, responses={404: {"description": "No such version"}}
)
async def get_version(session: SessionDep, principal: PrincipalDep, version: Version) -> RuleSetVersion:
    row = await session.get(RuleSetRow, version)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no routing rule set version {version}")
    return _version_public(row, body=True)


@rules_api.post(
    "/versions", response_model=RuleSetVersion, status_code=status.HTTP_201_CREATED, responses=_INVALID
)
async def create(
    session: SessionDep, settings: SettingsDep, admin: AdminDep, actor: ActorDep, body: RuleSetCreate
) -> RuleSetVersion:
    """Store a candidate rule set as the next version, inactive. Test it, replay it, then activate it."""
    try:
        row = await create_version(
            session, body.rules, actor=actor, comment=body.comment, known_topics=_known_topics(settings)
        )
    except ConfigError as exc:
        raise _invalid(exc) from exc
    await session.commit()
    return _version_public(row, body=True)


@rules_api.post(
    "/versions/{version}/activate",
    response_model=ActivationPublic,
    responses={
        404: {"description": "No such version"},
        409: {"description": "Invalid under the current taxonomy"},
    },
)
async def activate_version(
    session: SessionDep, settings: SettingsDep, admin: AdminDep, actor: ActorDep, version: Version
) -> ActivationPublic:
    """Make `version` the active rule set: one transaction, audited; every router replica switches to it
    within `MR_ROUTER_RULES_REFRESH_S`, between two batches."""
    row = await session.get(RuleSetRow, version)
    if row is not None:
        try:
            compile_rules(row.body, known_topics=_known_topics(settings), version=version)
        except ConfigError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    try:
        done = await activate(session, version, actor=actor)
    except UnknownVersion as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no routing rule set version {version}") from exc
    await session.commit()
    return ActivationPublic(
        version=done.version,
        previous_version=done.previous_version,
        activated_by=done.actor.name,
        activated_by_key=acting_key(done.actor.key_id, done.actor.key_name),
        activated_at=done.at,
    )


@rules_api.get("/audit", response_model=AuditLog)
async def audit(
    session: SessionDep, admin: AdminDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> AuditLog:
    """Who created and activated which version, newest first."""
    rows = await queries.audit_log(session, limit)
    return AuditLog(items=[AuditEntry.model_validate(r) for r in rows])


def _outcome(decision: Decision) -> list[AssignmentOutcome]:
    return [
        AssignmentOutcome(
            department=a.department.value,
            priority=a.priority.value,
            sla_minutes=a.sla_minutes,
            rules=list(a.rules),
        )
        for a in decision.assignments
    ]


def _matched(decision: Decision) -> list[RuleMatchPublic]:
    matched = [RuleMatchPublic(rule=m.name, conditions=list(m.conditions)) for m in decision.trace]
    if decision.fallback:
        matched.append(RuleMatchPublic(rule="fallback", conditions=["no rule routed the mention"]))
    return matched


@rules_api.post(
    "/test",
    response_model=DryRunResult,
    responses={**_INVALID, 404: {"description": "No such mention or version"}},
)
async def dry_run(
    session: SessionDep, settings: SettingsDep, principal: PrincipalDep, body: DryRunRequest
) -> DryRunResult:
    """Which rules match a mention and the assignments that would result. Persists nothing."""
    if (body.mention_id is None) == (body.mention is None):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "give exactly one of `mention_id` and `mention`"
        )
    rules, version = await _rule_set(session, settings, body=body.rules, version=body.version)
    if body.mention_id is not None:
        row = await session.get(MentionRow, body.mention_id)
        if row is not None and not principal.all_departments:
            visible = await assignment_queries.assigned_in(session, row.id, sorted(principal.readable))
            row = row if visible else None
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"mention {body.mention_id!r} not found")
        mention = mention_from_row(row)
        classification = body.classification or Classification.model_validate(row.classification)
    else:
        assert body.mention is not None
        draft = body.mention
        mention = Mention(
            id="dry-run",
            source_id=draft.source_id,
            kind=draft.kind,
            title=draft.title,
            text=draft.text,
            author=draft.author,
            published_at=datetime.now(UTC),
            language_hint=draft.language,
            influence=draft.influence,
        )
        classification = body.classification or _engine(settings.taxonomy_file).classify(mention)
    decision = rules.evaluate(mention, classification, explain=True)
    return DryRunResult(
        rules_version=version,
        mention_id=body.mention_id,
        classification=classification,
        matched=_matched(decision),
        assignments=_outcome(decision),
        departments=[d.value for d in decision.departments],
        tags=list(decision.tags),
    )


@rules_api.post(
    "/replay",
    response_model=ReplayResult,
    responses={**_INVALID, 404: {"description": "No such version, or no active rule set"}},
)
async def replay(
    session: SessionDep, settings: SettingsDep, admin: AdminDep, body: ReplayRequest
) -> ReplayResult:
    """Apply a candidate rule set to the latest stored mentions and report how their assignments would
    change against the active set. Persists nothing; nobody is notified."""
    if body.rules is None and body.version is None:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "give the candidate as `rules` or `version`"
        )
    candidate, candidate_version = await _rule_set(session, settings, body=body.rules, version=body.version)
    active, active_version = await _rule_set(session, settings, body=None, version=None)
    limit = min(body.limit, settings.rules_replay_max)
    rows = await queries.latest_mentions(session, limit)
    examined = changed = 0
    before_count: Counter[str] = Counter()
    after_count: Counter[str] = Counter()
    gained: Counter[str] = Counter()
    lost: Counter[str] = Counter()
    rule_delta: Counter[str] = Counter()
    examples: list[MentionChange] = []
    for row in rows:
        examined += 1
        mention = mention_from_row(row)
        classification = Classification.model_validate(row.classification)
        old = active.evaluate(mention, classification)
        new = candidate.evaluate(mention, classification)
        old_set = [f"{a.department.value}:{a.priority.value}" for a in old.assignments]
        new_set = [f"{a.department.value}:{a.priority.value}" for a in new.assignments]
        old_depts = {a.department.value for a in old.assignments}
        new_depts = {a.department.value for a in new.assignments}
        before_count.update(old_depts)
        after_count.update(new_depts)
        gained.update(new_depts - old_depts)
        lost.update(old_depts - new_depts)
        rule_delta.update(new.matched_rules)
        rule_delta.subtract(old.matched_rules)
        if sorted(old_set) != sorted(new_set):
            changed += 1
            if len(examples) < 100:
                examples.append(
                    MentionChange(mention_id=row.id, title=row.title[:200], before=old_set, after=new_set)
                )
    departments = sorted(set(before_count) | set(after_count))
    return ReplayResult(
        active_version=active_version,
        candidate_version=candidate_version,
        examined=examined,
        changed=changed,
        by_department={
            d: DepartmentChange(before=before_count[d], after=after_count[d], gained=gained[d], lost=lost[d])
            for d in departments
        },
        changed_rules={k: v for k, v in sorted(rule_delta.items()) if v},
        examples=examples,
    )


class DepartmentAccuracy(BaseModel):
    department: str
    routed: int = Field(description="Assignments the rules made for this department in the window.")
    reassigned_away: int = Field(description="…that a person moved to another department.")
    dismissed: int = Field(description="…that the department dismissed.")
    reassigned_in: int = Field(description="Assignments people moved here from another department.")
    accuracy: float | None = Field(description="1 - reassigned_away / routed; null without assignments.")


class RuleAccuracy(BaseModel):
    rule: str
    assignments: int
    reassigned_away: int
    dismissed: int


class AccuracyReport(BaseModel):
    window_hours: int
    departments: list[DepartmentAccuracy]
    rules: list[RuleAccuracy] = Field(
        description="Per rule, the outcome of the assignments it made; worst first."
    )


@rules_api.get("/accuracy", response_model=AccuracyReport)
async def accuracy(
    session: SessionDep,
    principal: PrincipalDep,
    window_hours: Annotated[int, Query(ge=1, le=24 * 365)] = 24 * 30,
) -> AccuracyReport:
    """How often people corrected the routing: per department and per rule, over assignments made in the
    window (reassignments are recorded as routing corrections; the classifier's training uses them too)."""
    since = utcnow() - timedelta(hours=window_hours)
    readable = sorted(principal.readable)
    rows = await queries.assignments_since(session, since, readable)
    per_department: dict[str, Counter[str]] = {d: Counter() for d in readable}
    per_rule: dict[str, Counter[str]] = {}
    for department, state, rules in rows:
        reassigned_in = any(str(r).startswith("reassigned from ") for r in rules)
        counts = per_department[department]
        counts["reassigned_in" if reassigned_in else "routed"] += 1
        if reassigned_in:
            continue
        outcome = (
            "reassigned_away" if state == "reassigned" else "dismissed" if state == "dismissed" else "kept"
        )
        counts[outcome] += 1
        for rule in rules:
            per_rule.setdefault(str(rule), Counter())["assignments"] += 1
            per_rule[str(rule)][outcome] += 1
    departments = [
        DepartmentAccuracy(
            department=d,
            routed=c["routed"],
            reassigned_away=c["reassigned_away"],
            dismissed=c["dismissed"],
            reassigned_in=c["reassigned_in"],
            accuracy=round(1 - c["reassigned_away"] / c["routed"], 4) if c["routed"] else None,
        )
        for d, c in per_department.items()
    ]
    ranked = sorted(
        per_rule.items(), key=lambda kv: (-kv[1]["reassigned_away"] / kv[1]["assignments"], kv[0])
    )
    return AccuracyReport(
        window_hours=window_hours,
        departments=departments,
        rules=[
            RuleAccuracy(
                rule=name,
                assignments=c["assignments"],
                reassigned_away=c["reassigned_away"],
                dismissed=c["dismissed"],
            )
            for name, c in ranked
        ],
    )
