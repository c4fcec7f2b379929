"""Test helpers for sources and what ingest published: register, read health, read mentions.raw."""

from __future__ import annotations

from sqlalchemy import select

from devsupport.kafka import read_topics
from shared.bus.base import Record
from shared.bus.codec import decode
from shared.db import SourceRow, create_engine, session_factory
from shared.events import MentionIngested
from shared.settings import Settings
from shared.sources import SourceSpec, add_source


async def register(settings: Settings, spec: SourceSpec) -> str:
    """Add a source the way `sources import` does; returns its id."""
    engine = create_engine(settings.database_url)
    try:
        async with session_factory(engine)() as session:
            row, _ = await add_source(session, spec)
            await session.commit()
            return row.id
    finally:
        await engine.dispose()


async def sources_by_id(settings: Settings) -> dict[str, SourceRow]:
    engine = create_engine(settings.database_url)
    try:
        async with session_factory(engine)() as session:
            return {s.id: s for s in (await session.scalars(select(SourceRow))).all()}
    finally:
        await engine.dispose()


async def read_raw(settings: Settings, *, missing_ok: bool = False) -> list[MentionIngested]:
    """Every MentionIngested on mentions.raw."""
    records = await read_topics(settings.kafka_bootstrap_servers, [settings.topic_raw], missing_ok=missing_ok)
    return [
        decode(
            Record(topic=r.topic, partition=r.partition, offset=r.offset, key=r.key.decode(), value=r.value),
            MentionIngested,
        )
        for r in records
    ]
