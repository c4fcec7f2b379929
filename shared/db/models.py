"""ORM rows. Never the wire format: events and API models have their own shapes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy import text as sql_text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware datetimes on every backend (SQLite stores them without a zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UtcDateTime column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# shared/workflow.py's OPEN and AWAITING_RESPONSE, spelled out for the partial indexes' predicates (a query
# uses such an index only with the same literal list; tests/unit/test_queue_indexes.py keeps them equal).
OPEN_STATUSES = ("acknowledged", "new", "reopened", "responded")
AWAITING_STATUSES = ("acknowledged", "new", "reopened")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UtcDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


class SourceRow(Base):
    __tablename__ = "sources"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    url: Mapped[str] = mapped_column(String(2000), unique=True)
    kind: Mapped[str] = mapped_column(String(20), default="feed")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    poll_interval_s: Mapped[int] = mapped_column(Integer, default=300)
    influence: Mapped[int] = mapped_column(Integer, default=1)
    language: Mapped[str | None] = mapped_column(String(8))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    etag: Mapped[str | None] = mapped_column(String(500))
    last_modified: Mapped[str | None] = mapped_column(String(100))
    last_polled_at: Mapped[datetime | None]
    last_success_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    items_seen: Mapped[int] = mapped_column(Integer, default=0)
    # Only entries matching this query become mentions (see services/ingest/filters.py).
    filter_query: Mapped[str | None] = mapped_column(Text)
    # First poll: "all" entries in the feed, or only those published after the source was added ("new").
    backfill: Mapped[str] = mapped_column(String(16), default="all", server_default="all")
    # A per-post comment feed discovered from an entry of `parent_id`; `post_url` is the post it belongs to.
    parent_id: Mapped[str | None] = mapped_column(String(64), index=True)
    post_url: Mapped[str | None] = mapped_column(String(2000))
    # The schedule and the lease live here so that any ingest replica can take the next poll.
    next_poll_at: Mapped[datetime | None] = mapped_column(index=True)
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None]
    last_status: Mapped[int | None] = mapped_column(Integer)


class SeenEntryRow(Base):
    """Entries ingest has published, so that a re-poll publishes nothing twice."""

    __tablename__ = "seen_entries"

    mention_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    source_id: Mapped[str] = mapped_column(String(64), index=True)
    first_seen_at: Mapped[datetime]


class FingerprintRow(Base):
    """MinHash signature of a published mention's text and its LSH band keys (services/ingest/minhash.py)."""

    __tablename__ = "fingerprints"

    mention_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    signature: Mapped[str] = mapped_column(Text)
    band0: Mapped[int] = mapped_column(BigInteger, index=True)
    band1: Mapped[int] = mapped_column(BigInteger, index=True)
    band2: Mapped[int] = mapped_column(BigInteger, index=True)
    band3: Mapped[int] = mapped_column(BigInteger, index=True)
    band4: Mapped[int] = mapped_column(BigInteger, index=True)
    band5: Mapped[int] = mapped_column(BigInteger, index=True)
    band6: Mapped[int] = mapped_column(BigInteger, index=True)
    band7: Mapped[int] = mapped_column(BigInteger, index=True)
    created_at: Mapped[datetime]


class IdempotencyKeyRow(Base):
    """A pushed request's Idempotency-Key with the response it got, so a retry publishes nothing twice.
    Scoped to the API key that sent it (migration 0009): another key's same Idempotency-Key is its own."""

    __tablename__ = "idempotency_keys"

    # "" for requests without a key (MR_API_AUTH=false) and for the rows from before migration 0009.
    api_key_id: Mapped[str] = mapped_column(String(16), primary_key=True, server_default="")
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class MentionRow(Base):
    __tablename__ = "mentions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    source_id: Mapped[str] = mapped_column(String(64), index=True)
    source_name: Mapped[str] = mapped_column(String(200), default="")
    kind: Mapped[str] = mapped_column(String(20))
    url: Mapped[str] = mapped_column(String(2000), default="")
    title: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text, default="")
    author: Mapped[str] = mapped_column(String(300), default="")
    author_url: Mapped[str] = mapped_column(String(2000), default="", server_default="")
    content_hash: Mapped[str] = mapped_column(String(64), default="", server_default="")
    published_at: Mapped[datetime]
    in_reply_to: Mapped[str | None] = mapped_column(String(2000))
    # A near-duplicate (the same article syndicated elsewhere) is stored linked to its original, unrouted.
    duplicate_of: Mapped[str | None] = mapped_column(String(64), index=True)
    ingested_at: Mapped[datetime]
    classified_at: Mapped[datetime]
    routed_at: Mapped[datetime]
    sentiment: Mapped[str] = mapped_column(String(16), index=True)
    sentiment_score: Mapped[float] = mapped_column(Float)
    language: Mapped[str] = mapped_column(String(8))
    topics: Mapped[list[Any]]
    classification: Mapped[dict[str, Any]]
    # Kept for the rules' replay and the API's filters (migration 0003).
    intent: Mapped[str] = mapped_column(String(16), default="information", server_default="information")
    urgency: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    influence: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    language_hint: Mapped[str | None] = mapped_column(String(8))
    rules_version: Mapped[int | None] = mapped_column(Integer)
    matched_rules: Mapped[list[Any]] = mapped_column(JSON, default=list, server_default="[]")
    tags: Mapped[list[Any]] = mapped_column(JSON, default=list, server_default="[]")

    __table_args__ = (
        Index("ix_mentions_routed_at_id", "routed_at", "id"),
        Index("ix_mentions_published_at_id", "published_at", "id"),
        # A mention's thread (services/api/threads.py, migration 0010): the post a comment answers, the
        # comments on a post. Equality only, so hash indexes on PostgreSQL: a B-tree entry is limited to
        # about 2.7 kB and a URL of 2,000 characters outside ASCII would not fit.
        Index("ix_mentions_url", "url", postgresql_using="hash"),
        Index(
            "ix_mentions_in_reply_to",
            "in_reply_to",
            postgresql_using="hash",
            postgresql_where=sql_text("in_reply_to IS NOT NULL"),
            sqlite_where=sql_text("in_reply_to IS NOT NULL"),
        ),
        # PostgreSQL also has `search`, a stored tsvector generated from title and text, with the GIN
        # index ix_mentions_search (migration 0007; before it, ix_mentions_fts on the expression), which
        # the models leave out: SQLite has no equivalent (tests/integration/test_migrations.py knows).
    )


class MentionTopicRow(Base):
    __tablename__ = "mention_topics"

    mention_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("mentions.id", ondelete="CASCADE"), primary_key=True
    )
    topic: Mapped[str] = mapped_column(String(64), primary_key=True)

    __table_args__ = (Index("ix_mention_topics_topic_mention", "topic", "mention_id"),)


class AssignmentRow(Base):
    """One per (mention, department): the department's own copy of the work."""

    __tablename__ = "assignments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    mention_id: Mapped[str] = mapped_column(String(64), ForeignKey("mentions.id", ondelete="CASCADE"))
    department: Mapped[str] = mapped_column(String(32))
    priority: Mapped[str] = mapped_column(String(4))
    status: Mapped[str] = mapped_column(String(16), default="new")
    sla_due_at: Mapped[datetime]
    assignee: Mapped[str | None] = mapped_column(String(200))
    rules: Mapped[list[Any]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # The mention's routed_at, copied (it never changes): a department's list filtered on status or
    # priority pages through the assignments in the mentions' order (migration 0008).
    routed_at: Mapped[datetime]
    # Workflow (migration 0003; see shared/workflow.py).
    sla_minutes: Mapped[int] = mapped_column(Integer, default=1440, server_default="1440")
    tags: Mapped[list[Any]] = mapped_column(JSON, default=list, server_default="[]")
    claimed_at: Mapped[datetime | None]
    acknowledged_at: Mapped[datetime | None]
    first_response_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    # SLA escalation: the level reached, when, and when the next escalation is due (null: none pending).
    escalation_level: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    escalated_at: Mapped[datetime | None]
    next_escalation_at: Mapped[datetime | None] = mapped_column(index=True)
    reassigned_to: Mapped[str | None] = mapped_column(String(32))
    # Bumped by every change: the ETag of the assignment.
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")

    __table_args__ = (
        UniqueConstraint("mention_id", "department", name="uq_assignments_mention_department"),
        # A department's assignments in a status or at a priority, newest mention first (the lists).
        Index("ix_assignments_department_status_routed", "department", "status", "routed_at", "mention_id"),
        Index(
            "ix_assignments_department_priority_routed", "department", "priority", "routed_at", "mention_id"
        ),
        # A department's assignments waiting for a response, newest mention first: the overdue list.
        Index(
            "ix_assignments_awaiting_routed",
            "department",
            "routed_at",
            "mention_id",
            "sla_due_at",
            postgresql_where=sql_text(f"status IN {AWAITING_STATUSES!r}"),
            sqlite_where=sql_text(f"status IN {AWAITING_STATUSES!r}"),
        ),
        # The queue statistics (migration 0007): partial indexes over the few assignments still open or
        # waiting for a response, and over the responded ones by routing time (the median response).
        Index(
            "ix_assignments_awaiting_sla",
            "department",
            "sla_due_at",
            postgresql_where=sql_text(f"status IN {AWAITING_STATUSES!r}"),
            sqlite_where=sql_text(f"status IN {AWAITING_STATUSES!r}"),
        ),
        Index(
            "ix_assignments_open_created",
            "department",
            "created_at",
            postgresql_where=sql_text(f"status IN {OPEN_STATUSES!r}"),
            sqlite_where=sql_text(f"status IN {OPEN_STATUSES!r}"),
        ),
        Index(
            "ix_assignments_responded_created",
            "department",
            "created_at",
            "first_response_at",
            postgresql_where=sql_text("first_response_at IS NOT NULL"),
            sqlite_where=sql_text("first_response_at IS NOT NULL"),
        ),
    )


class AssignmentCountRow(Base):
    """Assignments per department, status and priority, kept by triggers on `assignments` in the same
    transaction as every insert, update and delete (migration 0007): the queue statistics read five
    departments' counts here instead of counting every assignment ever routed."""

    __tablename__ = "assignment_counts"

    department: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    priority: Mapped[str] = mapped_column(String(4), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))


class ActivityRow(Base):
    """What happened to an assignment: every transition, claim, reply, note, reassignment, escalation."""

    __tablename__ = "activity"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    mention_id: Mapped[str] = mapped_column(String(64), ForeignKey("mentions.id", ondelete="CASCADE"))
    assignment_id: Mapped[int | None] = mapped_column(Integer, index=True)
    department: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(32))
    # The display name (X-Actor or the key's name); the key that made the change beside it (migration
    # 0009; null for the system's own changes, such as an SLA escalation, and for older rows).
    actor: Mapped[str] = mapped_column(String(200))
    actor_key_id: Mapped[str | None] = mapped_column(String(16))
    actor_key_name: Mapped[str | None] = mapped_column(String(200))
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str | None] = mapped_column(String(16))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    at: Mapped[datetime]

    __table_args__ = (Index("ix_activity_mention_id_id", "mention_id", "id"),)


class ReplyRow(Base):
    """A response a department gave to the community (the two-way dialogue)."""

    __tablename__ = "replies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    assignment_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("assignments.id", ondelete="CASCADE"), index=True
    )
    mention_id: Mapped[str] = mapped_column(String(64), index=True)
    department: Mapped[str] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text)
    url: Mapped[str | None] = mapped_column(String(2000))
    channel: Mapped[str | None] = mapped_column(String(100))
    author: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]


class CorrectionRow(Base):
    """A person's correction of a label or of the routing; `mention-router train` folds them in.

    `field`: sentiment | intent | topics | departments; `value` the corrected label (a string or a list)."""

    __tablename__ = "corrections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    mention_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("mentions.id", ondelete="CASCADE"), index=True
    )
    field: Mapped[str] = mapped_column(String(32))
    value: Mapped[Any] = mapped_column(JSON, nullable=False)
    previous: Mapped[Any] = mapped_column(JSON, nullable=True)
    actor: Mapped[str] = mapped_column(String(200))
    actor_key_id: Mapped[str | None] = mapped_column(String(16))
    actor_key_name: Mapped[str | None] = mapped_column(String(200))
    # The departments the correction was made for (migration 0009): who may see it. Null on older rows,
    # which only keys that read every department see.
    departments: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime]


class RuleSetRow(Base):
    """A version of the routing rules (the rule set's canonical dict). Exactly one is active."""

    __tablename__ = "routing_rule_sets"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    body: Mapped[dict[str, Any]]
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(200))
    created_by_key_id: Mapped[str | None] = mapped_column(String(16))
    created_by_key_name: Mapped[str | None] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    activated_at: Mapped[datetime | None]
    activated_by: Mapped[str | None] = mapped_column(String(200))
    activated_by_key_id: Mapped[str | None] = mapped_column(String(16))
    activated_by_key_name: Mapped[str | None] = mapped_column(String(200))


class RuleAuditRow(Base):
    """Who created or activated which rule set version, when, and what was active before."""

    __tablename__ = "routing_rule_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    action: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(Integer)
    previous_version: Mapped[int | None] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(200))
    actor_key_id: Mapped[str | None] = mapped_column(String(16))
    actor_key_name: Mapped[str | None] = mapped_column(String(200))
    at: Mapped[datetime]


class OutboxRow(Base):
    """Messages written in the same transaction as the change they announce; a relay publishes them and
    deletes them (at-least-once: a crash between the two publishes again)."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    topic: Mapped[str] = mapped_column(String(249))
    key: Mapped[str | None] = mapped_column(String(200))
    value: Mapped[bytes] = mapped_column(LargeBinary)
    headers: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class ApiKeyRow(Base):
    """An API key: shown once when created, stored as the SHA-256 of its secret part, with its scopes
    (`admin`, `read:<department>`, `write:<department>`)."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    secret_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[Any]]
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(200))
    created_by_key_id: Mapped[str | None] = mapped_column(String(16))
    created_by_key_name: Mapped[str | None] = mapped_column(String(200))
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class WebhookEndpointRow(Base):
    """A department's HTTP endpoint: its routed (and escalated) mentions are POSTed to it, signed."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    department: Mapped[str] = mapped_column(String(32), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    # HMAC-SHA256 key of the signature header; it has to be kept to sign, and is shown once.
    secret: Mapped[str] = mapped_column(String(200))
    event_types: Mapped[list[Any]]
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    description: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime]
    # Why the endpoint was switched off by the system (a 410 Gone answer); cleared when re-enabled.
    disabled_reason: Mapped[str | None] = mapped_column(String(500))
    # After a rotation, deliveries carry a signature with the previous secret too, until it expires.
    previous_secret: Mapped[str | None] = mapped_column(String(200))
    previous_secret_expires_at: Mapped[datetime | None]


class WebhookDeliveryRow(Base):
    """One event for one endpoint: its attempts, the last answer, and when to try again."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(Integer, ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(200))
    event_type: Mapped[str] = mapped_column(String(64))
    mention_id: Mapped[str] = mapped_column(String(64))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    # pending (not tried yet), retrying (failed, tried again at next_attempt_at), delivered, dead.
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # When the sender may take it next; while a request is in flight, the end of the sender's lease.
    next_attempt_at: Mapped[datetime | None] = mapped_column(index=True)
    last_attempt_at: Mapped[datetime | None]
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_duration_ms: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_id", name="uq_webhook_deliveries_endpoint_event"),
        # The delivery log: an endpoint's deliveries, newest first.
        Index("ix_webhook_deliveries_endpoint_id_id", "endpoint_id", "id"),
    )


class AlertRow(Base):
    """A spike: a topic's mentions in one clock hour far above its trailing baseline (shared/alerts.py).
    One per (kind, topic, window_start): detecting it again in the same hour updates its count."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))
    topic: Mapped[str] = mapped_column(String(64))
    # The topic's department in the taxonomy when the alert was raised: who may see it.
    department: Mapped[str | None] = mapped_column(String(32))
    window_start: Mapped[datetime]
    window_end: Mapped[datetime]
    count: Mapped[int] = mapped_column(Integer)
    # Mean and standard deviation of the topic's hourly counts over `baseline_hours` before the window.
    baseline: Mapped[float] = mapped_column(Float)
    stddev: Mapped[float] = mapped_column(Float)
    baseline_hours: Mapped[int] = mapped_column(Integer)
    threshold: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(index=True)
    updated_at: Mapped[datetime]
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[str | None] = mapped_column(String(200))
    acknowledged_by_key_id: Mapped[str | None] = mapped_column(String(16))
    acknowledged_by_key_name: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (UniqueConstraint("kind", "topic", "window_start", name="uq_alerts_kind_topic_window"),)
