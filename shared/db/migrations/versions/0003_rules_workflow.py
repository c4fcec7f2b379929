"""router: versioned rule sets with an audit, the assignment workflow, activity, replies, corrections,
and an outbox for escalation events

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)
_BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("mentions") as batch:
        batch.add_column(sa.Column("intent", sa.String(16), nullable=False, server_default="information"))
        batch.add_column(sa.Column("urgency", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("influence", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("language_hint", sa.String(8), nullable=True))
        batch.add_column(sa.Column("rules_version", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("matched_rules", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("tags", sa.JSON(), nullable=False, server_default="[]"))

    with op.batch_alter_table("assignments") as batch:
        batch.add_column(sa.Column("sla_minutes", sa.Integer(), nullable=False, server_default="1440"))
        batch.add_column(sa.Column("tags", sa.JSON(), nullable=False, server_default="[]"))
        for name in ("claimed_at", "acknowledged_at", "first_response_at", "resolved_at", "closed_at"):
            batch.add_column(sa.Column(name, _TS, nullable=True))
        batch.add_column(sa.Column("escalation_level", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("escalated_at", _TS, nullable=True))
        batch.add_column(sa.Column("next_escalation_at", _TS, nullable=True))
        batch.add_column(sa.Column("reassigned_to", sa.String(32), nullable=True))
        batch.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
        batch.create_index("ix_assignments_next_escalation_at", ["next_escalation_at"])
    # Assignments stored before this migration are due to escalate at their SLA time if still open.
    op.execute(
        "UPDATE assignments SET next_escalation_at = sla_due_at "
        "WHERE status IN ('new', 'acknowledged', 'reopened')"
    )

    op.create_table(
        "activity",
        sa.Column("id", _BIGID, nullable=False),
        sa.Column("mention_id", sa.String(64), nullable=False),
        sa.Column("assignment_id", sa.Integer(), nullable=True),
        sa.Column("department", sa.String(32), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("from_status", sa.String(16), nullable=True),
        sa.Column("to_status", sa.String(16), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["mention_id"], ["mentions.id"], name=op.f("fk_activity_mention_id_mentions"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_activity")),
    )
    op.create_index("ix_activity_mention_id_id", "activity", ["mention_id", "id"])
    op.create_index("ix_activity_assignment_id", "activity", ["assignment_id"])

    op.create_table(
        "replies",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("assignment_id", sa.Integer(), nullable=False),
        sa.Column("mention_id", sa.String(64), nullable=False),
        sa.Column("department", sa.String(32), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("url", sa.String(2000), nullable=True),
        sa.Column("channel", sa.String(100), nullable=True),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["assignment_id"],
            ["assignments.id"],
            name=op.f("fk_replies_assignment_id_assignments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_replies")),
    )
    op.create_index("ix_replies_assignment_id", "replies", ["assignment_id"])
    op.create_index("ix_replies_mention_id", "replies", ["mention_id"])

    op.create_table(
        "corrections",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("mention_id", sa.String(64), nullable=False),
        sa.Column("field", sa.String(32), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("previous", sa.JSON(), nullable=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["mention_id"],
            ["mentions.id"],
            name=op.f("fk_corrections_mention_id_mentions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_corrections")),
    )
    op.create_index("ix_corrections_mention_id", "corrections", ["mention_id"])

    op.create_table(
        "routing_rule_sets",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("activated_at", _TS, nullable=True),
        sa.Column("activated_by", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_routing_rule_sets")),
    )
    op.create_table(
        "routing_rule_audit",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("previous_version", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_routing_rule_audit")),
    )
    op.create_table(
        "outbox",
        sa.Column("id", _BIGID, nullable=False),
        sa.Column("topic", sa.String(249), nullable=False),
        sa.Column("key", sa.String(200), nullable=True),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )


def downgrade() -> None:
    for table in ("outbox", "routing_rule_audit", "routing_rule_sets", "corrections", "replies", "activity"):
        op.drop_table(table)
    with op.batch_alter_table("assignments") as batch:
        batch.drop_index("ix_assignments_next_escalation_at")
        for name in (
            "version",
            "reassigned_to",
            "next_escalation_at",
            "escalated_at",
            "escalation_level",
            "closed_at",
            "resolved_at",
            "first_response_at",
            "acknowledged_at",
            "claimed_at",
            "tags",
            "sla_minutes",
        ):
            batch.drop_column(name)
    with op.batch_alter_table("mentions") as batch:
        for name in (
            "tags",
            "matched_rules",
            "rules_version",
            "language_hint",
            "influence",
            "urgency",
            "intent",
        ):
            batch.drop_column(name)
