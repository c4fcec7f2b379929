"""insert_ignore and insert_ignore_tables on real PostgreSQL (and SQLite): the unnest fast paths store exactly
what SQLAlchemy's insert stores."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import DBAPIError

import shared.db.engine as db_engine
from shared.db import (
    AssignmentRow,
    MentionRow,
    MentionTopicRow,
    create_engine,
    insert_ignore,
    session_factory,
)
from shared.db.engine import JsonText, TableRows, insert_ignore_tables
from shared.errors import is_transient

pytestmark = [pytest.mark.postgres]


def _mention(i: int) -> dict[str, Any]:
    at = datetime(2026, 11, 1, 9, 30, tzinfo=timezone(timedelta(hours=2))) + timedelta(minutes=i)
    return {
        "id": f"m{i}",
        "source_id": "s1",
        "source_name": 'Blog «Ünïcode» "quoted"',
        "kind": "post",
        "url": f"https://blog.example.net/{i}",
        "title": "Title",
        "text": "Text with emoji 🙂 and a backslash \\ and a {brace}",
        "author": "Dana",
        "author_url": "",
        "content_hash": "",
        "duplicate_of": None,
        "published_at": at,
        "in_reply_to": None,
        "ingested_at": at,
        "classified_at": at,
        "routed_at": at,
        "sentiment": "negative",
        "sentiment_score": -0.5 if i % 2 else 1,
        "language": "en",
        "topics": ["bug", "security"],
        "classification": {"sentiment": "negative", "nested": {"list": [1, 2.5, None, "ü"]}, "empty": {}},
        # Every column the router writes (a column left out that has a Python-side default takes the
        # ORM's path instead of unnest).
        "intent": "complaint",
        "urgency": 0.25 * (i % 4),
        "influence": 1 + i % 3,
        "language_hint": None if i % 2 else "de",
        "rules_version": 3,
        "matched_rules": ["r1", "r2"],
        "tags": ["security"] if i % 2 else [],
    }


def _rows(i: int) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    mention = _mention(i)
    now = datetime(2026, 11, 2, tzinfo=UTC)
    topics = [{"mention_id": mention["id"], "topic": t} for t in ("bug", "security")]
    assignments = [
        {
            "mention_id": mention["id"],
            "department": d,
            "priority": "P1",
            "status": "new",
            "sla_due_at": now + timedelta(minutes=60),
            "assignee": None,
            "rules": ["r1", "r2"],
            "created_at": now,
            "updated_at": now,
            "routed_at": now,
            "sla_minutes": 60,
            "next_escalation_at": now + timedelta(minutes=60),
            "escalation_level": 0,
            "tags": ["security"],
            "version": 1,
        }
        for d in ("rnd", "pr")
    ]
    return mention, topics, assignments


async def _store(url: str, batches: list[list[int]]) -> list[Any]:
    engine = create_engine(url)
    sessions = session_factory(engine)
    try:
        for batch in batches:
            rows = [_rows(i) for i in batch]
            async with sessions() as session, session.begin():
                await insert_ignore(session, MentionRow, [m for m, _, _ in rows], keys=["id"])
                await insert_ignore(
                    session,
                    MentionTopicRow,
                    [t for _, ts, _ in rows for t in ts],
                    keys=["mention_id", "topic"],
                )
                await insert_ignore(
                    session,
                    AssignmentRow,
                    [a for _, _, asg in rows for a in asg],
                    keys=["mention_id", "department"],
                )
        async with sessions() as session:
            mentions = [tuple(r) for r in (await session.execute(select(MentionRow.__table__))).all()]
            topics = [tuple(r) for r in (await session.execute(select(MentionTopicRow.__table__))).all()]
            assignments = [
                tuple(r)[1:] for r in (await session.execute(select(AssignmentRow.__table__))).all()
            ]
        return sorted(mentions) + sorted(topics) + sorted(assignments)
    finally:
        await engine.dispose()


async def test_unnest_path_stores_what_the_orm_insert_stores(
    pg_url: str, postgres_server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Overlapping batches: the second and third repeat rows of the first (redeliveries).
    batches = [[0, 1, 2], [2, 3], [0, 3, 4]]
    fast = await _store(pg_url, batches)
    assert db_engine._unnest_insert(MentionRow.__table__, tuple(_mention(0)), ("id",)) is not None

    from bench.infra import create_database, drop_database

    name = f"mr_test_slow_{id(batches)}"
    slow_url = await create_database(postgres_server_url, name)
    try:
        await db_engine.migrate(slow_url)
        monkeypatch.setattr(db_engine, "_unnest_insert", lambda *args: None)
        slow = await _store(slow_url, batches)
    finally:
        await drop_database(postgres_server_url, name)
    assert len(fast) == 5 + 10 + 10
    assert fast == slow


async def test_rows_that_rely_on_a_python_default_take_the_orm_path(pg_url: str) -> None:
    row = _mention(0)
    row.pop("source_name")  # has default=""
    assert db_engine._unnest_insert(MentionRow.__table__, tuple(row), ("id",)) is None
    engine = create_engine(pg_url)
    try:
        async with session_factory(engine)() as session, session.begin():
            await insert_ignore(session, MentionRow, [row], keys=["id"])
        async with session_factory(engine)() as session:
            stored = await session.scalar(select(MentionRow.source_name))
        assert stored == ""
    finally:
        await engine.dispose()


# --- insert_ignore_tables: the router's batch, column by column, one statement on PostgreSQL ---------------


def _columns(rows: list[dict[str, Any]], *, json_text: tuple[str, ...] = ()) -> dict[str, list[Any]]:
    return {
        name: [JsonText(orjson.dumps(r[name]).decode()) if name in json_text else r[name] for r in rows]
        for name in rows[0]
    }


# The assignments' columns that hold the same value in every row, sent once.
CONSTANT = (
    "status",
    "assignee",
    "created_at",
    "updated_at",
    "routed_at",
    "escalation_level",
    "version",
    "tags",
)


def _tables(batch: list[int]) -> list[TableRows]:
    rows = [_rows(i) for i in batch]
    assignments = _columns([a for _, _, asg in rows for a in asg])
    constants = {name: assignments.pop(name)[0] for name in CONSTANT}
    return [
        # The labels as the router gives them (serialised once), the rest as Python values.
        TableRows(MentionRow, _columns([m for m, _, _ in rows], json_text=("classification",)), ("id",)),
        TableRows(MentionTopicRow, _columns([t for _, ts, _ in rows for t in ts]), ("mention_id", "topic")),
        TableRows(AssignmentRow, assignments, ("mention_id", "department"), constants=constants),
    ]


async def _stored(sessions: Any) -> list[Any]:
    async with sessions() as session:
        mentions = [tuple(r) for r in (await session.execute(select(MentionRow.__table__))).all()]
        topics = [tuple(r) for r in (await session.execute(select(MentionTopicRow.__table__))).all()]
        assignments = [tuple(r)[1:] for r in (await session.execute(select(AssignmentRow.__table__))).all()]
    return sorted(mentions) + sorted(topics) + sorted(assignments)


# Duplicates inside a batch (mention 2 twice) and across batches (redeliveries).
BATCHES = [[0, 1, 2, 2], [2, 3], [0, 3, 4]]


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
async def test_insert_ignore_tables_stores_each_row_once_as_the_orm_insert_does(
    backend: str,
    pg_url: str,
    sqlite_url: str,
    postgres_server_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = pg_url if backend == "postgres" else sqlite_url
    engine = create_engine(url)
    statements: list[str] = []
    event.listen(engine.sync_engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    try:
        for batch in BATCHES:
            statements.clear()
            await insert_ignore_tables(session_factory(engine), _tables(batch))
            inserts = [s for s in statements if s.lstrip().upper().startswith(("INSERT", "WITH"))]
            if backend == "postgres":
                # One round trip for the three tables, and no BEGIN/COMMIT around it.
                assert len(inserts) == 1 and inserts[0].startswith("WITH"), statements
            else:
                assert len(inserts) == 3, statements
        stored = await _stored(session_factory(engine))
    finally:
        await engine.dispose()

    # The reference: the ORM's own insert, table by table, in a database of the same kind.
    if backend == "postgres":
        from bench.infra import create_database, drop_database

        name = f"mr_test_orm_{uuid.uuid4().hex[:8]}"
        reference_url = await create_database(postgres_server_url, name)
    else:
        reference_url = f"sqlite+aiosqlite:///{tmp_path / 'reference.db'}"
    try:
        await db_engine.migrate(reference_url)
        monkeypatch.setattr(db_engine, "_unnest_insert", lambda *args: None)
        reference = await _store(reference_url, BATCHES)
    finally:
        if backend == "postgres":
            await drop_database(postgres_server_url, name)
    assert len(stored) == 5 + 10 + 10
    assert stored == reference


async def test_insert_ignore_tables_stores_nothing_of_a_batch_with_a_row_that_does_not_fit(
    pg_url: str,
) -> None:
    tables = _tables([10, 11, 12])
    tables[0].columns["url"][1] = "https://blog.example.net/" + "x" * 2000  # over String(2000)
    engine = create_engine(pg_url)
    try:
        with pytest.raises(DBAPIError) as caught:
            await insert_ignore_tables(session_factory(engine), tables)
        # Not transient: the stage retries the batch record by record and dead-letters that one.
        assert not is_transient(caught.value)
        assert await _stored(session_factory(engine)) == []
        await insert_ignore_tables(session_factory(engine), _tables([10, 12]))
        assert len(await _stored(session_factory(engine))) == 2 + 4 + 4
    finally:
        await engine.dispose()


async def test_insert_ignore_refuses_a_value_longer_than_its_column_instead_of_cutting_it(
    pg_url: str,
) -> None:
    # An explicit cast to VARCHAR(2000)[] would cut the URL to 2,000 characters without a word.
    row = _mention(20)
    row["url"] = "https://blog.example.net/" + "x" * 2000
    assert db_engine._unnest_insert(MentionRow.__table__, tuple(row), ("id",)) is not None
    engine = create_engine(pg_url)
    try:
        with pytest.raises(DBAPIError, match="too long"):
            async with session_factory(engine)() as session, session.begin():
                await insert_ignore(session, MentionRow, [row], keys=["id"])
    finally:
        await engine.dispose()
