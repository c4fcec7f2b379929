"""ingest: source options, shared schedule and leases, near-duplicate fingerprints, push idempotency

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sources") as batch:
        batch.add_column(sa.Column("filter_query", sa.Text(), nullable=True))
        batch.add_column(sa.Column("backfill", sa.String(16), nullable=False, server_default="all"))
        batch.add_column(sa.Column("parent_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("post_url", sa.String(2000), nullable=True))
        batch.add_column(sa.Column("next_poll_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("lease_owner", sa.String(100), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("last_status", sa.Integer(), nullable=True))
        batch.create_index("ix_sources_next_poll_at", ["next_poll_at"])
        batch.create_index("ix_sources_parent_id", ["parent_id"])

    op.create_table(
        "fingerprints",
        sa.Column("mention_id", sa.String(64), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        *(sa.Column(f"band{band}", sa.BigInteger(), nullable=False) for band in range(8)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("mention_id", name=op.f("pk_fingerprints")),
    )
    for band in range(8):
        op.create_index(f"ix_fingerprints_band{band}", "fingerprints", [f"band{band}"])

    with op.batch_alter_table("mentions") as batch:
        batch.add_column(sa.Column("author_url", sa.String(2000), nullable=False, server_default=""))
        batch.add_column(sa.Column("content_hash", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("duplicate_of", sa.String(64), nullable=True))
        batch.create_index("ix_mentions_duplicate_of", ["duplicate_of"])

    op.create_table(
        "idempotency_keys",
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("response", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_idempotency_keys")),
    )


def downgrade() -> None:
    op.drop_table("idempotency_keys")
    with op.batch_alter_table("mentions") as batch:
        batch.drop_index("ix_mentions_duplicate_of")
        batch.drop_column("duplicate_of")
        batch.drop_column("content_hash")
        batch.drop_column("author_url")
    op.drop_table("fingerprints")
    with op.batch_alter_table("sources") as batch:
        batch.drop_index("ix_sources_parent_id")
        batch.drop_index("ix_sources_next_poll_at")
        for column in (
            "last_status",
            "lease_expires_at",
            "lease_owner",
            "next_poll_at",
            "post_url",
            "parent_id",
            "backfill",
            "filter_query",
        ):
            batch.drop_column(column)
