"""Migrations and models agree, on PostgreSQL and on SQLite: `migrate` then autogenerate finds nothing."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from shared.db import Base, create_engine


def _diff(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return [d for d in compare_metadata(context, Base.metadata) if not _benign(d)]


# PostgreSQL-only full-text search that the models leave out (see shared/db/models.py): the stored
# tsvector column and its GIN index.
POSTGRES_ONLY_INDEXES = {"ix_mentions_search"}
POSTGRES_ONLY_COLUMNS = {("mentions", "search")}


def _benign(diff: Any) -> bool:
    if isinstance(diff, tuple) and diff[0] == "remove_index" and diff[1].name in POSTGRES_ONLY_INDEXES:
        return True
    if (
        isinstance(diff, tuple)
        and diff[0] == "remove_column"
        and (diff[2], diff[3].name) in POSTGRES_ONLY_COLUMNS
    ):
        return True
    # SQLite reports no server defaults reliably; the type map differs only in spelling there.
    return isinstance(diff, list) and all(d[0] in ("modify_default",) for d in diff)


@pytest.mark.postgres
async def test_postgres_schema_matches_the_models(pg_url: str) -> None:
    engine = create_engine(pg_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await engine.dispose()


async def test_sqlite_schema_matches_the_models(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await engine.dispose()
