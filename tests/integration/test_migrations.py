"""Migrations and models agree, on PostgreSQL and on SQLite: `migrate` then autogenerate finds nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import JSON, Connection, column, insert, select, table, text

from devsupport.apiclient import api_client
from services.router.service import RouterService
from shared.db import (
    ActivityRow,
    AssignmentRow,
    Base,
    CorrectionRow,
    IdempotencyKeyRow,
    RuleAuditRow,
    RuleSetRow,
    create_engine,
)
from shared.db.models import UtcDateTime
from shared.events import utcnow


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


# --- migration 0009: the acting key beside every actor; records from before it stay readable -----------


async def _alembic(url: str, action: str, revision: str) -> None:
    from alembic import command

    from shared.db.engine import _alembic_config

    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda c: getattr(command, action)(_alembic_config(c), revision))
    finally:
        await engine.dispose()


async def _records_before_the_keys(url: str) -> str:
    """A database at 0008 with a routed mention and an activity row, a correction, a rule set with its
    audit, a key, an acknowledged alert and an idempotency record written as 0008 wrote them; the id of
    the mention (routed to support and R&D)."""
    from devsupport.factories import TEMPLATES, classified_event
    from shared.bus import MemoryBus, Record
    from shared.bus.codec import encode
    from shared.db import session_factory
    from shared.routing import RuleSet
    from shared.settings import Settings

    await _alembic(url, "upgrade", "0008")
    settings = Settings().model_copy(update={"database_url": url})
    engine = create_engine(url)
    try:
        router = RouterService(
            settings=settings,
            bus=MemoryBus(),
            sessions=session_factory(engine),
            rules=RuleSet.from_file(settings.routing_file),
        )
        index = next(i for i, t in enumerate(TEMPLATES) if t[2] == frozenset({"rnd", "support"}))
        event = classified_event(index)
        message = encode(topic="t", key=event.mention.id, event=event, source="/t")
        await router.handle([Record(topic="t", partition=0, offset=0, key=message.key, value=message.value)])
        now = utcnow()
        # Only the columns 0008 has: SQLAlchemy's insert leaves the others out.
        async with engine.begin() as conn:
            assignment = await conn.scalar(
                select(AssignmentRow.id).where(
                    AssignmentRow.mention_id == event.mention.id, AssignmentRow.department == "support"
                )
            )
            await conn.execute(
                insert(ActivityRow).values(
                    mention_id=event.mention.id,
                    assignment_id=assignment,
                    department="support",
                    action="note",
                    actor="old-actor",
                    detail={"text": "from before"},
                    at=now,
                )
            )
            await conn.execute(
                insert(CorrectionRow).values(
                    mention_id=event.mention.id,
                    field="departments",
                    value=["rnd"],
                    previous=["rnd", "support"],
                    actor="old-actor",
                    created_at=now,
                )
            )
            await conn.execute(
                insert(RuleSetRow).values(
                    version=1,
                    body={"fallback": {"department": "marketing"}, "rules": []},
                    comment="",
                    created_at=now,
                    created_by="old-actor",
                    active=True,
                    activated_at=now,
                    activated_by="old-actor",
                )
            )
            await conn.execute(
                insert(RuleAuditRow).values(
                    action="activated", version=1, previous_version=None, actor="old-actor", at=now
                )
            )
            # 0008's table, with its primary key alone (the model's has api_key_id too).
            before = table(
                "idempotency_keys",
                column("key"),
                column("request_hash"),
                column("status_code"),
                column("response", JSON()),
                column("created_at", UtcDateTime()),
            )
            await conn.execute(
                insert(before).values(
                    key="retry-1", request_hash="h", status_code=202, response={"accepted": 0}, created_at=now
                )
            )
        return event.mention.id
    finally:
        await engine.dispose()


async def _read_them_through_the_api(url: str, mention_id: str) -> None:

    from shared.apikeys import create_key
    from shared.db import session_factory
    from shared.settings import BusKind, Settings

    engine = create_engine(url)
    async with session_factory(engine)() as session:
        admin = (await create_key(session, name="ops", scopes=["admin"], created_by="test")).key
        support = (await create_key(session, name="desk", scopes=["read:support"], created_by="test")).key
        await session.commit()
        old_idempotency = await session.get(IdempotencyKeyRow, ("", "retry-1"))
        assert old_idempotency is not None and old_idempotency.response == {"accepted": 0}
    settings = Settings().model_copy(
        update={"database_url": url, "bus": BusKind.MEMORY, "api_auth": True, "metrics_port": 0}
    )
    try:
        async with api_client(settings, engine=engine, base_url="http://a") as c:

            async def get(key: str, path: str) -> Any:
                response = await c.get(path, headers={"Authorization": f"Bearer {key}"})
                assert response.status_code == 200, response.text
                return response.json()

            [note] = (await get(support, f"/v1/mentions/{mention_id}/activity"))["items"]
            assert (note["actor"], note["actor_key"], note["detail"]) == (
                "old-actor",
                None,
                {"text": "from before"},
            )
            [old] = (await get(admin, f"/v1/mentions/{mention_id}"))["corrections"]
            assert (old["actor"], old["actor_key"], old["value"]) == ("old-actor", None, ["rnd"])
            # Made for no known department: only a key that reads every department sees it.
            assert (await get(support, f"/v1/mentions/{mention_id}"))["corrections"] == []
            [audit] = (await get(admin, "/v1/routing-rules/audit"))["items"]
            assert (audit["actor"], audit["actor_key"]) == ("old-actor", None)
            version = await get(admin, "/v1/routing-rules/versions/1")
            assert (version["created_by"], version["created_by_key"], version["activated_by_key"]) == (
                "old-actor",
                None,
                None,
            )
    finally:
        await engine.dispose()


async def _same_idempotency_key_from_two_keys(url: str) -> None:
    """What 0009 allows and 0008 cannot hold: the downgrade keeps one of them."""
    from shared.db import session_factory

    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            for api_key in ("aaaa0000", "bbbb1111"):
                session.add(
                    IdempotencyKeyRow(
                        api_key_id=api_key,
                        key="shared",
                        request_hash="h",
                        status_code=202,
                        response={},
                        created_at=utcnow(),
                    )
                )
            await session.commit()
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_postgres_records_from_before_0009_stay_readable_and_it_reverts(empty_pg_url: str) -> None:
    mention_id = await _records_before_the_keys(empty_pg_url)
    await _alembic(empty_pg_url, "upgrade", "head")
    await _read_them_through_the_api(empty_pg_url, mention_id)
    await _same_idempotency_key_from_two_keys(empty_pg_url)
    await _alembic(empty_pg_url, "downgrade", "0008")
    await _alembic(empty_pg_url, "upgrade", "head")


async def test_sqlite_records_from_before_0009_stay_readable_and_it_reverts(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    mention_id = await _records_before_the_keys(url)
    await _alembic(url, "upgrade", "head")
    await _read_them_through_the_api(url, mention_id)
    await _same_idempotency_key_from_two_keys(url)
    await _alembic(url, "downgrade", "0008")
    await _alembic(url, "upgrade", "head")
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
            # The assignment count triggers survived: the tables 0009 changed are not rebuilt.
            triggers = await conn.scalar(
                text("SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name LIKE :like"),
                {"like": "assignment_counts%"},
            )
            assert triggers == 3
    finally:
        await engine.dispose()
