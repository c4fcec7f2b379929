"""insert_ignore on real PostgreSQL: the unnest fast path stores exactly what SQLAlchemy's insert stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import select

import shared.db.engine as db_engine
from shared.db import (
    AssignmentRow,
    MentionRow,
    MentionTopicRow,
    create_engine,
    insert_ignore,
    session_factory,
)

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
