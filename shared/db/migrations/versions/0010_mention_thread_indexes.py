"""api: indexes for a mention's thread (GET /v1/mentions/{id}/thread)

- ix_mentions_url: the post a comment answers is the mention whose url is the comment's in_reply_to;
- ix_mentions_in_reply_to: the comments on a post (partial: only comments have one).

Equality lookups only, so hash indexes on PostgreSQL (no size limit on the URL, which a B-tree entry has:
about 2.7 kB); B-trees on SQLite. Building them reads the mentions once, and the table takes no writes
meanwhile: like every migration, it runs before the services start.

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REPLIES = "in_reply_to IS NOT NULL"


def upgrade() -> None:
    op.create_index("ix_mentions_url", "mentions", ["url"], postgresql_using="hash")
    op.create_index(
        "ix_mentions_in_reply_to",
        "mentions",
        ["in_reply_to"],
        postgresql_using="hash",
        postgresql_where=sa.text(REPLIES),
        sqlite_where=sa.text(REPLIES),
    )


def downgrade() -> None:
    op.drop_index("ix_mentions_in_reply_to", table_name="mentions")
    op.drop_index("ix_mentions_url", table_name="mentions")
