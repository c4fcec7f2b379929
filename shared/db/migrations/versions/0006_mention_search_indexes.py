"""api: full-text search over mentions (PostgreSQL), and the indexes of the list's other sort orders

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Keep identical to services/api/queries/mentions.py FTS_DOCUMENT (the query must use the index's expression).
FTS_DOCUMENT = (
    "to_tsvector('simple'::regconfig, coalesce(mentions.title, '') || ' ' || coalesce(mentions.text, ''))"
)


def upgrade() -> None:
    op.create_index("ix_mentions_published_at_id", "mentions", ["published_at", "id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"CREATE INDEX ix_mentions_fts ON mentions USING gin (({FTS_DOCUMENT}))")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_mentions_fts")
    op.drop_index("ix_mentions_published_at_id", table_name="mentions")
