"""Event models carried on the bus. Past tense, frozen, versioned.

The ORM rows (shared.db.models) and the API models (services.api.schemas) are separate shapes;
an event is only ever the wire format between services.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1
_MENTION_NAMESPACE = uuid.UUID("6f1c3a2e-6d0b-4a47-9d55-3a5f0c1e8b21")


def mention_id(source_id: str, entry_key: str) -> str:
    """Deterministic id from the source and the entry's guid or canonical URL.

    A re-polled or replayed entry gets the same id, which every consumer uses to stay idempotent.
    """
    return uuid.uuid5(_MENTION_NAMESPACE, f"{source_id}\n{entry_key.strip()}").hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class MentionKind(StrEnum):
    POST = "post"
    COMMENT = "comment"


class Sentiment(StrEnum):
    POSITIVE = "positive"
    NEUTRAL = "neutral"
    NEGATIVE = "negative"


class Intent(StrEnum):
    QUESTION = "question"
    COMPLAINT = "complaint"
    PRAISE = "praise"
    SUGGESTION = "suggestion"
    INFORMATION = "information"


class Department(StrEnum):
    MARKETING = "marketing"
    PR = "pr"
    SUPPORT = "support"
    RND = "rnd"
    PRODUCT = "product"


class Priority(StrEnum):
    P1 = "P1"
    P2 = "P2"
    P3 = "P3"
    P4 = "P4"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Mention(_Frozen):
    """The content of a mention as ingest normalised it."""

    id: str = Field(min_length=1, max_length=64)
    source_id: str = Field(min_length=1, max_length=64)
    source_name: str = ""
    kind: MentionKind = MentionKind.POST
    url: str = ""
    title: str = ""
    text: str = ""
    author: str = ""
    author_url: str = ""
    published_at: AwareDatetime
    # For a comment: the canonical URL of the post it answers.
    in_reply_to: str | None = None
    # The source's language hint, or the language ingest detected in the text.
    language_hint: str | None = None
    influence: int = Field(default=1, ge=1, le=3)
    # sha256 of the normalised title and text.
    content_hash: str = ""
    # Set when the text is a near-duplicate (MinHash) of an earlier mention: stored, linked, not routed.
    near_duplicate_of: str | None = None


class TopicLabel(_Frozen):
    name: str
    confidence: float = Field(ge=0.0, le=1.0)
    evidence: list[str] = Field(default_factory=list)


class DepartmentLabel(_Frozen):
    name: Department
    confidence: float = Field(ge=0.0, le=1.0)
    evidence: list[str] = Field(default_factory=list)


class Classification(_Frozen):
    sentiment: Sentiment
    sentiment_score: float = Field(ge=-1.0, le=1.0)
    sentiment_confidence: float = Field(ge=0.0, le=1.0)
    sentiment_evidence: list[str] = Field(default_factory=list)
    topics: list[TopicLabel] = Field(default_factory=list)
    language: str = "und"
    engine: str
    engine_version: str
    # Added after schema version 1 shipped; the defaults keep older events parseable.
    language_confidence: float = Field(default=0.0, ge=0.0, le=1.0)
    language_evidence: list[str] = Field(default_factory=list)
    intent: Intent = Intent.INFORMATION
    intent_confidence: float = Field(default=0.0, ge=0.0, le=1.0)
    intent_evidence: list[str] = Field(default_factory=list)
    urgency: float = Field(default=0.0, ge=0.0, le=1.0)
    urgency_evidence: list[str] = Field(default_factory=list)
    # Departments a learned engine suggests (the routing rules decide; see `departments_any`).
    departments: list[DepartmentLabel] = Field(default_factory=list)


class Assignment(_Frozen):
    department: Department
    priority: Priority
    sla_minutes: int = Field(ge=1)
    rules: list[str] = Field(default_factory=list)


class MentionIngested(_Frozen):
    """A new post or comment, as ingest (or the push API) normalised it."""

    type: Literal["mention.ingested"] = "mention.ingested"
    schema_version: int = SCHEMA_VERSION
    mention: Mention
    ingested_at: AwareDatetime = Field(default_factory=utcnow)


class MentionClassified(_Frozen):
    """A mention with its labels: topics, sentiment and language, each with its evidence."""

    type: Literal["mention.classified"] = "mention.classified"
    schema_version: int = SCHEMA_VERSION
    mention: Mention
    ingested_at: AwareDatetime
    classification: Classification
    classified_at: AwareDatetime = Field(default_factory=utcnow)


class MentionRouted(_Frozen):
    """A mention assigned to one department, published once per chosen department."""

    type: Literal["mention.routed"] = "mention.routed"
    schema_version: int = SCHEMA_VERSION
    mention: Mention
    classification: Classification
    department: Department
    assignment: Assignment
    all_departments: list[Department]
    ingested_at: AwareDatetime
    routed_at: AwareDatetime = Field(default_factory=utcnow)
    # Added after schema version 1 shipped (defaults keep older events parseable): every rule that
    # matched (in order), the rule set version that decided, the rules' tags, and when the SLA runs out.
    matched_rules: list[str] = Field(default_factory=list)
    rules_version: int | None = None
    tags: list[str] = Field(default_factory=list)
    sla_due_at: AwareDatetime | None = None


class MentionEscalated(_Frozen):
    """An assignment passed its SLA without a first response: its priority went one step up.

    Published on `mentions.routed.<department>` (next to the routed events; tell them apart by `type` or the
    `ce_type` header) and on `mentions.escalations`."""

    type: Literal["mention.escalated"] = "mention.escalated"
    schema_version: int = SCHEMA_VERSION
    mention_id: str
    department: Department
    title: str = ""
    url: str = ""
    status: str
    assignee: str | None = None
    previous_priority: Priority
    priority: Priority
    escalation_level: int = Field(ge=1)
    sla_due_at: AwareDatetime
    escalated_at: AwareDatetime


class MentionAlert(_Frozen):
    """A spike: a topic's mentions in the current clock hour far above its trailing hourly baseline.

    Published on `mentions.alerts` (key: the topic) once per topic and hour, when the hour's count first
    reaches the threshold; the alert's count keeps growing in the API for the rest of the hour."""

    type: Literal["mention.alert"] = "mention.alert"
    schema_version: int = SCHEMA_VERSION
    alert_id: int = Field(description="The alert's id in the API (`/v1/alerts/{id}/acknowledge`).")
    kind: Literal["spike"] = "spike"
    topic: str = Field(description="The taxonomy topic whose mentions spiked.")
    department: Department | None = Field(
        default=None, description="The topic's department in the taxonomy (null: the topic has none now)."
    )
    window_start: AwareDatetime = Field(description="The clock hour of the spike: its start (UTC)...")
    window_end: AwareDatetime = Field(description="...and its end.")
    count: int = Field(ge=0, description="Mentions of the topic routed in the hour when it was detected.")
    baseline: float = Field(ge=0, description="Mean mentions per hour over the baseline hours.")
    stddev: float = Field(ge=0, description="Standard deviation of those hourly counts.")
    baseline_hours: int = Field(ge=0, description="How many hours before the window the baseline covers.")
    threshold: float = Field(description="The count at which the hour became a spike.")
    detected_at: AwareDatetime


Event = MentionIngested | MentionClassified | MentionRouted | MentionEscalated | MentionAlert
