"""API models: the shapes the REST API reads and writes (never ORM rows, never bus events)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AnyHttpUrl, BaseModel, Field

from services.api.inputs import RequestModel, UtcDatetime


class AssignmentPublic(BaseModel):
    id: int
    department: str
    priority: str
    status: str = Field(
        description="new, acknowledged, responded, resolved, dismissed, reopened or reassigned"
    )
    sla_due_at: datetime = Field(description="When the first response is due.")
    sla_minutes: int
    overdue: bool = Field(description="Past its SLA without a response.")
    escalation_level: int = Field(description="How many times the SLA escalated it (0: never).")
    assignee: str | None
    rules: list[str] = Field(description="The routing rules that gave this department the mention.")
    tags: list[str]
    created_at: datetime
    updated_at: datetime
    acknowledged_at: datetime | None
    first_response_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None
    reassigned_to: str | None
    version: int = Field(description='Bumped by every change; the ETag is `"<id>-<version>"`.')


class MentionPublic(BaseModel):
    id: str
    source_id: str
    source_name: str
    kind: str
    url: str
    title: str
    text: str
    author: str
    published_at: datetime
    in_reply_to: str | None
    ingested_at: datetime
    routed_at: datetime
    sentiment: str
    sentiment_score: float
    intent: str
    urgency: float
    language: str
    topics: list[str]
    tags: list[str] = Field(description="Tags the routing rules added.")
    duplicate_of: str | None = Field(
        description="Set for a near-duplicate of an earlier mention (not routed)."
    )
    classification: dict[str, Any] = Field(
        description="The classifier's labels with confidence and evidence."
    )
    assignments: list[AssignmentPublic] = Field(description="In the caller's departments only.")


class MentionPage(BaseModel):
    items: list[MentionPublic]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


class SourceCreate(RequestModel):
    name: str = Field(min_length=1, max_length=200)
    url: AnyHttpUrl
    kind: Literal["feed", "comments"] = "feed"
    influence: int = Field(default=1, ge=1, le=3, description="The source's reach: 1 low .. 3 high.")
    poll_interval_seconds: int = Field(default=300, ge=1, le=86_400)
    language: str | None = Field(default=None, min_length=2, max_length=8)
    enabled: bool = True
    filter: str | None = Field(
        default=None,
        max_length=2000,
        description='Only entries matching this become mentions, e.g. `"acme cloud" OR acmecloud -jobs`.',
    )
    backfill: Literal["all", "new"] = Field(
        default="all", description="First poll: every entry in the feed, or only those published after now."
    )


class SourceUpdate(RequestModel):
    """The fields to change; the others stay as they are."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    url: AnyHttpUrl | None = None
    influence: int | None = Field(default=None, ge=1, le=3)
    poll_interval_seconds: int | None = Field(default=None, ge=1, le=86_400)
    language: str | None = Field(default=None, min_length=2, max_length=8)
    enabled: bool | None = None
    filter: str | None = Field(default=None, max_length=2000)
    backfill: Literal["all", "new"] | None = None


class SourcePublic(BaseModel):
    id: str
    name: str
    url: str
    kind: str
    enabled: bool
    influence: int
    poll_interval_seconds: int
    language: str | None
    created_at: datetime
    last_polled_at: datetime | None
    last_success_at: datetime | None
    last_error: str | None
    consecutive_failures: int
    items_seen: int
    filter: str | None
    backfill: str
    parent_id: str | None = Field(
        description="For a discovered per-post comment feed: the source of the post."
    )
    post_url: str | None
    next_poll_at: datetime | None
    last_status: int | None


class SourceList(BaseModel):
    items: list[SourcePublic]


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)


class MentionPush(RequestModel):
    """A post or comment forwarded from another network by an integration."""

    source: str = Field(
        min_length=1,
        max_length=60,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Where it came from.",
    )
    url: AnyHttpUrl
    title: str = Field(default="", max_length=1_000)
    text: str = Field(max_length=100_000)
    author: str = Field(default="", max_length=300)
    external_id: str | None = Field(
        default=None, min_length=1, max_length=500, description="The id on the other network; else the URL."
    )
    published_at: UtcDatetime | None = None
    kind: Literal["post", "comment"] = "post"
    in_reply_to: AnyHttpUrl | None = None
    language: str | None = Field(default=None, min_length=2, max_length=8)
    influence: int = Field(default=1, ge=1, le=3)


class PushAccepted(BaseModel):
    accepted: int
    ids: list[str] = Field(description="The mention ids, in the order of the request.")


class ActingKey(BaseModel):
    """The API key that made a change: recorded from the authenticated request, not from anything the
    caller sends (`X-Actor` only sets the display name beside it)."""

    id: str
    name: str


def acting_key(key_id: str | None, key_name: str | None) -> ActingKey | None:
    """None for the system's own changes (an SLA escalation, a seed), requests without keys
    (MR_API_AUTH=false), and records made before keys were recorded (migration 0009)."""
    return ActingKey(id=key_id, name=key_name or "") if key_id is not None else None
