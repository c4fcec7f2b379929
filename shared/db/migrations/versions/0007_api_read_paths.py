"""api: the read paths at a million mentions — a stored full-text vector, assignment counts kept by
triggers, and partial indexes for the queue statistics (python -m bench.api_bench, docs/performance.md)

- mentions.search (PostgreSQL): the tsvector of title and text, generated and stored, with the GIN index
  ix_mentions_search in place of ix_mentions_fts. A full-text list walks the newest mentions and tests
  each one's vector; with the expression index it recomputed to_tsvector for every row it passed
  (0.1 ms each: 160-290 ms for a common word), the stored vector costs microseconds. Adding the column
  rewrites the mentions table (minutes per million rows, writes blocked meanwhile).
- assignment_counts: assignments per (department, status, priority), kept in the writing transaction by
  triggers on assignments (PostgreSQL: one per statement over its transition tables, upserts in key order
  so that concurrent writers take the rows' locks in the same order; SQLite: one per row). The queue
  statistics counted every assignment ever routed (230 ms at 1.7M assignments).
- partial indexes over the assignments still waiting for a response (overdue), still open (the oldest
  one) and responded (the median time to respond, by routing time).

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEARCH_DOCUMENT = "to_tsvector('simple'::regconfig, coalesce(title, '') || ' ' || coalesce(text, ''))"
OPEN = "status IN ('acknowledged', 'new', 'reopened', 'responded')"
AWAITING = "status IN ('acknowledged', 'new', 'reopened')"
RESPONDED = "first_response_at IS NOT NULL"

_UPSERT = (
    "INSERT INTO assignment_counts (department, status, priority, n) {select} "
    "ON CONFLICT (department, status, priority) DO UPDATE SET n = assignment_counts.n + excluded.n"
)

_INSERTED = _UPSERT.format(
    select="SELECT department, status, priority, count(*) FROM new_rows "
    "GROUP BY department, status, priority ORDER BY department, status, priority"
)
_DELETED = _UPSERT.format(
    select="SELECT department, status, priority, -count(*) FROM old_rows "
    "GROUP BY department, status, priority ORDER BY department, status, priority"
)
_UPDATED = _UPSERT.format(
    select="SELECT department, status, priority, sum(d) FROM ("
    "SELECT department, status, priority, -1 AS d FROM old_rows "
    "UNION ALL SELECT department, status, priority, 1 AS d FROM new_rows) AS changes "
    "GROUP BY department, status, priority HAVING sum(d) <> 0 "
    "ORDER BY department, status, priority"
)
_PG_FUNCTION = (
    "CREATE FUNCTION assignment_counts_apply() RETURNS trigger LANGUAGE plpgsql AS $$\n"
    "BEGIN\n"
    f"    IF TG_OP = 'INSERT' THEN {_INSERTED};\n"
    f"    ELSIF TG_OP = 'DELETE' THEN {_DELETED};\n"
    f"    ELSE {_UPDATED};\n"
    "    END IF;\n"
    "    RETURN NULL;\n"
    "END\n"
    "$$"
)

_PG_TRUNCATE = """
CREATE FUNCTION assignment_counts_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM assignment_counts;
    RETURN NULL;
END
$$
"""

_SQLITE_TRIGGERS = [
    """CREATE TRIGGER assignment_counts_insert AFTER INSERT ON assignments BEGIN
        INSERT INTO assignment_counts (department, status, priority, n)
        VALUES (NEW.department, NEW.status, NEW.priority, 1)
        ON CONFLICT (department, status, priority) DO UPDATE SET n = n + 1;
    END""",
    """CREATE TRIGGER assignment_counts_delete AFTER DELETE ON assignments BEGIN
        UPDATE assignment_counts SET n = n - 1
        WHERE department = OLD.department AND status = OLD.status AND priority = OLD.priority;
    END""",
    """CREATE TRIGGER assignment_counts_update AFTER UPDATE OF department, status, priority ON assignments
    WHEN OLD.department IS NOT NEW.department OR OLD.status IS NOT NEW.status
        OR OLD.priority IS NOT NEW.priority
    BEGIN
        UPDATE assignment_counts SET n = n - 1
        WHERE department = OLD.department AND status = OLD.status AND priority = OLD.priority;
        INSERT INTO assignment_counts (department, status, priority, n)
        VALUES (NEW.department, NEW.status, NEW.priority, 1)
        ON CONFLICT (department, status, priority) DO UPDATE SET n = n + 1;
    END""",
]

_BACKFILL = (
    "INSERT INTO assignment_counts (department, status, priority, n) "
    "SELECT department, status, priority, count(*) FROM assignments GROUP BY department, status, priority"
)


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute(
            f"ALTER TABLE mentions ADD COLUMN search tsvector GENERATED ALWAYS AS ({SEARCH_DOCUMENT}) STORED"
        )
        op.execute("CREATE INDEX ix_mentions_search ON mentions USING gin (search)")
        op.execute("DROP INDEX ix_mentions_fts")

    op.create_table(
        "assignment_counts",
        sa.Column("department", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("priority", sa.String(4), nullable=False),
        sa.Column("n", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.PrimaryKeyConstraint("department", "status", "priority", name=op.f("pk_assignment_counts")),
    )
    if postgres:
        op.execute(_PG_FUNCTION)
        op.execute(_PG_TRUNCATE)
        for event, referencing in (
            ("INSERT", "NEW TABLE AS new_rows"),
            ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
            ("DELETE", "OLD TABLE AS old_rows"),
        ):
            op.execute(
                f"CREATE TRIGGER assignment_counts_{event.lower()} AFTER {event} ON assignments "
                f"REFERENCING {referencing} FOR EACH STATEMENT EXECUTE FUNCTION assignment_counts_apply()"
            )
        op.execute(
            "CREATE TRIGGER assignment_counts_truncate AFTER TRUNCATE ON assignments "
            "FOR EACH STATEMENT EXECUTE FUNCTION assignment_counts_truncate()"
        )
    else:
        for trigger in _SQLITE_TRIGGERS:
            op.execute(trigger)
    # The triggers lock the assignments table against writers until this migration commits (PostgreSQL),
    # so the counts start from exactly what is there.
    op.execute(_BACKFILL)

    for name, columns, where in (
        ("ix_assignments_awaiting_sla", ["department", "sla_due_at"], AWAITING),
        ("ix_assignments_open_created", ["department", "created_at"], OPEN),
        ("ix_assignments_responded_created", ["department", "created_at", "first_response_at"], RESPONDED),
    ):
        op.create_index(
            name, "assignments", columns, postgresql_where=sa.text(where), sqlite_where=sa.text(where)
        )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for name in (
        "ix_assignments_responded_created",
        "ix_assignments_open_created",
        "ix_assignments_awaiting_sla",
    ):
        op.drop_index(name, table_name="assignments")
    if postgres:
        for event in ("insert", "update", "delete", "truncate"):
            op.execute(f"DROP TRIGGER assignment_counts_{event} ON assignments")
        op.execute("DROP FUNCTION assignment_counts_apply()")
        op.execute("DROP FUNCTION assignment_counts_truncate()")
    else:
        for event in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER assignment_counts_{event}")
    op.drop_table("assignment_counts")
    if postgres:
        op.execute(
            "CREATE INDEX ix_mentions_fts ON mentions USING gin "
            "((to_tsvector('simple'::regconfig, coalesce(mentions.title, '') || ' ' || "
            "coalesce(mentions.text, ''))))"
        )
        op.execute("DROP INDEX ix_mentions_search")
        op.execute("ALTER TABLE mentions DROP COLUMN search")
