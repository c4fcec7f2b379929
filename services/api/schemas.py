"""API models: the shapes the REST API reads and writes (never ORM rows, never bus events).

The public models read ORM rows directly (`RowModel`: `Model.model_validate(row)`), so that a column and
its field cannot drift apart in a hand-written mapper; the few fields a row does not hold (`overdue`, a
ratio, what a key may see) are computed by a function beside the route, which says so.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, UrlConstraints, model_validator

from services.api.inputs import RequestModel, UtcDatetime
from shared.db.models import AWAITING_STATUSES

# A URL the database stores (mentions.url, in_reply_to: 2,000 characters; AnyHttpUrl alone allows 2,083,
# and the router would dead-letter the mention instead of the API refusing it).
StoredUrl = Annotated[AnyHttpUrl, UrlConstraints(max_length=2000)]


class RowModel(BaseModel):
    """A public model that reads an ORM row: `Model.model_validate(row)` takes each field from the row's
    attribute of that name (`from_attributes`; a `validation_alias` where the column is named otherwise),
    and an `ActingKey` field `<x>_key` from the row's two columns `<x>_key_id` and `<x>_key_name`. The
    fields a row does not hold are computed by the caller and given to `from_row`."""

    model_config = ConfigDict(from_attributes=True)

    @model_validator(mode="before")
    @classmethod
    def _read_row(cls, data: Any) -> Any:
        return data if isinstance(data, dict | BaseModel | _RowView) else _RowView(data, {})


class _RowView:
    """A row as a RowModel reads it: the fields given, else the row's attributes, else its acting keys."""

    __slots__ = ("_derived", "_row")

    def __init__(self, row: object, derived: dict[str, Any]) -> None:
        self._row = row
        self._derived = derived

    def __getattr__(self, name: str) -> Any:
        if name in self._derived:
            return self._derived[name]
        try:
            return getattr(self._row, name)
        except AttributeError:
            if not name.endswith("_key"):
                raise
            return acting_key(getattr(self._row, f"{name}_id"), getattr(self._row, f"{name}_name"))


Public = TypeVar("Public", bound=RowModel)


def from_row(model: type[Public], row: object, **derived: Any) -> Public:
    """`model` read from `row` (see RowModel), with the fields the row does not hold given as `derived`."""
    return model.model_validate(_RowView(row, derived))


def json_bytes(value: Any) -> bytes:
    """JSON as pydantic writes it for the response models (UTC as `Z`), for the answers written without
    them (the list and the export: validating 50 mentions with their evidence was a third of the CPU)."""
    return orjson.dumps(value, option=orjson.OPT_UTC_Z)


def overdue(*, status: str, first_response_at: datetime | None, sla_due_at: datetime, now: datetime) -> bool:
    """An assignment past its SLA without a first response, as every answer shows it (the list's
    `overdue` filter is the same condition in SQL, services/api/queries/mentions.py)."""
    return first_response_at is None and status in AWAITING_STATUSES and sla_due_at < now


class AssignmentPublic(RowModel):
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


class MentionPublic(RowModel):
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


class SourcePublic(RowModel):
    id: str
    name: str
    url: str
    kind: str
    enabled: bool
    influence: int
    poll_interval_seconds: int = Field(validation_alias="poll_interval_s")
    language: str | None
    created_at: datetime
    last_polled_at: datetime | None
    last_success_at: datetime | None
    last_error: str | None
    consecutive_failures: int
    items_seen: int
    filter: str | None = Field(validation_alias="filter_query")
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
    url: StoredUrl
    title: str = Field(default="", max_length=1_000)
    text: str = Field(max_length=100_000)
    author: str = Field(default="", max_length=300)
    external_id: str | None = Field(
        default=None, min_length=1, max_length=500, description="The id on the other network; else the URL."
    )
    published_at: UtcDatetime | None = None
    kind: Literal["post", "comment"] = "post"
    in_reply_to: StoredUrl | None = None
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
