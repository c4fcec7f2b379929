"""Alembic environment: runs on the connection that shared.db.engine.migrate hands it."""

from __future__ import annotations

from alembic import context

from shared.db.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `mention-router migrate` (shared.db.engine.migrate)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
