"""api: who did it — the API key beside every actor, corrections by department, idempotency per key

- activity, corrections, routing_rule_audit: actor_key_id and actor_key_name, the key that authenticated
  the change (the `actor` column keeps the display name: X-Actor, or the key's name). routing_rule_sets:
  the same for created_by and activated_by; api_keys: for created_by; alerts: for acknowledged_by.
  Nullable: older rows, and the system's own changes (an SLA escalation), have no key.
- corrections.departments: the departments a correction was made for, so that a department's key sees
  only those. Null on older rows (only keys that read every department see them).
- idempotency_keys: api_key_id joins the primary key, so that one key's Idempotency-Key never replays
  another key's response. Older rows get "" (the key-less requests of MR_API_AUTH=false): a retry that
  spans the upgrade is processed again, which the pipeline absorbs (it is idempotent on the mention id).

Only columns are added (no table is rewritten on PostgreSQL: a nullable column without a default is a
catalogue change); idempotency_keys, small and short-lived, gets a new primary key index.

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, column prefix): each gets <prefix>_key_id and <prefix>_key_name.
KEYED = [
    ("activity", "actor"),
    ("corrections", "actor"),
    ("routing_rule_audit", "actor"),
    ("routing_rule_sets", "created_by"),
    ("routing_rule_sets", "activated_by"),
    ("api_keys", "created_by"),
    ("alerts", "acknowledged_by"),
]


def upgrade() -> None:
    for table, prefix in KEYED:
        # Plain ALTER TABLE ... ADD COLUMN on SQLite too: a batch rebuild would lose the tables' triggers.
        op.add_column(table, sa.Column(f"{prefix}_key_id", sa.String(16), nullable=True))
        op.add_column(table, sa.Column(f"{prefix}_key_name", sa.String(200), nullable=True))
    op.add_column("corrections", sa.Column("departments", sa.JSON(), nullable=True))
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.add_column(sa.Column("api_key_id", sa.String(16), nullable=False, server_default=""))
        batch.drop_constraint("pk_idempotency_keys", type_="primary")
        batch.create_primary_key("pk_idempotency_keys", ["api_key_id", "key"])


def downgrade() -> None:
    # Two keys may have stored the same Idempotency-Key: keep one row of each, then the old primary key.
    op.execute(
        "DELETE FROM idempotency_keys WHERE api_key_id <> '' AND EXISTS (SELECT 1 FROM idempotency_keys "
        "AS other WHERE other.key = idempotency_keys.key AND other.api_key_id < idempotency_keys.api_key_id)"
    )
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_constraint("pk_idempotency_keys", type_="primary")
        batch.create_primary_key("pk_idempotency_keys", ["key"])
        batch.drop_column("api_key_id")
    op.drop_column("corrections", "departments")
    for table, prefix in reversed(KEYED):
        op.drop_column(table, f"{prefix}_key_name")
        op.drop_column(table, f"{prefix}_key_id")
