"""assignments.routed_at: the mention's routing time on each assignment, for the department lists

A list filtered on an assignment attribute (status, priority) walked the mentions newest first and probed
each one's assignment: fast where matches are dense among recent mentions, long where they are not
(`department=product&priority=P1` walked 49,405 mentions, 288 ms; a deep page of `status=acknowledged`
walked to the end of the table, 2.9 s; docs/performance.md). With the routing time on the assignment, such
a page is read in order from an index on (department, status | priority, routed_at, mention_id).

- routed_at: copied from the mention (it never changes), NOT NULL; filled for the existing rows here
  (PostgreSQL rewrites every assignment: about a minute per million on a quiet machine; the counts
  trigger is held off meanwhile, the update changes no count).
- ix_assignments_department_status is widened to (department, status, routed_at, mention_id), and
  (department, priority, routed_at, mention_id) is added, and (department, routed_at, mention_id,
  sla_due_at) over the assignments waiting for a response (the overdue list).

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


AWAITING = "status IN ('acknowledged', 'new', 'reopened')"


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    # NOT NULL needs a default for the rows already there; every row gets its real value just below, and
    # on PostgreSQL the default is dropped again (SQLite cannot drop it without rebuilding the table, which
    # would lose its triggers; nothing ever relies on it: the router and the workflow always set it).
    op.add_column(
        "assignments",
        sa.Column(
            "routed_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text(
                "'1970-01-01 00:00:00+00'" if postgres else "'1970-01-01 00:00:00.000000'"
            ),
        ),
    )
    if postgres:
        op.execute("ALTER TABLE assignments DISABLE TRIGGER assignment_counts_update")
        op.execute(
            "UPDATE assignments SET routed_at = mentions.routed_at FROM mentions "
            "WHERE mentions.id = assignments.mention_id"
        )
        op.execute("ALTER TABLE assignments ENABLE TRIGGER assignment_counts_update")
        op.alter_column("assignments", "routed_at", server_default=None)
    else:
        op.execute(
            "UPDATE assignments SET routed_at = "
            "(SELECT mentions.routed_at FROM mentions WHERE mentions.id = assignments.mention_id)"
        )
    op.drop_index("ix_assignments_department_status", table_name="assignments")
    op.create_index(
        "ix_assignments_department_status_routed",
        "assignments",
        ["department", "status", "routed_at", "mention_id"],
    )
    op.create_index(
        "ix_assignments_department_priority_routed",
        "assignments",
        ["department", "priority", "routed_at", "mention_id"],
    )
    op.create_index(
        "ix_assignments_awaiting_routed",
        "assignments",
        ["department", "routed_at", "mention_id", "sla_due_at"],
        postgresql_where=sa.text(AWAITING),
        sqlite_where=sa.text(AWAITING),
    )


def downgrade() -> None:
    op.drop_index("ix_assignments_awaiting_routed", table_name="assignments")
    op.drop_index("ix_assignments_department_priority_routed", table_name="assignments")
    op.drop_index("ix_assignments_department_status_routed", table_name="assignments")
    op.create_index("ix_assignments_department_status", "assignments", ["department", "status"])
    # A plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+): a batch rebuild would lose SQLite's triggers.
    op.drop_column("assignments", "routed_at")
