"""`make run`'s promise: the bundled example feeds reach all five departments, and a second start reuses
what is there, duplicates nothing, and recovers what the in-memory bus lost when the last run died."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import delete, func, select

from devsupport.processes import free_port
from devsupport.scenario import wait_for
from services.embedded import EXAMPLE_SOURCES, embedded_settings, run_embedded
from shared.bus import MemoryBroker
from shared.bus.codec import decode
from shared.db import AssignmentRow, MentionRow, create_engine, session_factory
from shared.events import MentionClassified
from shared.settings import DEPARTMENTS, ClassifierEngineKind, Settings
from shared.sources import load_sources_file

pytestmark = pytest.mark.e2e


async def _run_until(settings: Settings, check: str, *, within: float = 60) -> MemoryBroker:
    """Start the embedded runner with the examples, wait for `check` on /v1/queues, stop it cleanly."""
    broker = MemoryBroker(partitions=settings.topic_partitions)
    started = datetime.now(UTC)
    stop = asyncio.Event()
    runner = asyncio.create_task(
        run_embedded(settings, stop=stop, sources_file=EXAMPLE_SOURCES, broker=broker)
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.api_port}", timeout=5) as api:

            async def done() -> bool:
                if runner.done():
                    runner.result()
                try:
                    queues = (await api.get("/v1/queues")).json()["departments"]
                except httpx.TransportError:
                    return False
                sources = (await api.get("/v1/sources")).json()["items"]
                polled = bool(sources) and all(
                    s["last_success_at"] and datetime.fromisoformat(s["last_success_at"]) >= started
                    for s in sources
                )
                return polled and (check != "all-departments" or all(q["total"] > 0 for q in queues))

            await wait_for(done, within=within, what=check)
    finally:
        stop.set()
        await asyncio.wait_for(runner, 20)
    return broker


async def _counts(url: str) -> tuple[int, int]:
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as s:
            mentions = await s.scalar(select(func.count()).select_from(MentionRow))
            assignments = await s.scalar(select(func.count()).select_from(AssignmentRow))
    finally:
        await engine.dispose()
    return int(mentions or 0), int(assignments or 0)


async def test_examples_reach_every_department_and_a_restart_duplicates_nothing(tmp_path: Path) -> None:
    # `make run` as a user gets it: the default classifier (the cascade over the committed model), not
    # the rules engine the other tests use.
    settings = embedded_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'mr.db'}",
        api_port=free_port(),
        classifier_engine=Settings.model_fields["classifier_engine"].default,
    )
    assert settings.classifier_engine is ClassifierEngineKind.CASCADE
    entries = 60
    assert len(load_sources_file(EXAMPLE_SOURCES)) >= 5

    first = await _run_until(settings, "all-departments")
    mentions, assignments = await _counts(settings.database_url)
    assert mentions >= entries, "the examples hold at least 60 entries"
    assert len(first.records(settings.topic_raw)) == mentions
    per_department = {d: len(first.records(settings.topic_routed(d))) for d in DEPARTMENTS}
    assert all(n > 0 for n in per_department.values()), per_department
    classified = [
        decode(r, MentionClassified).classification for r in first.records(settings.topic_classified)
    ]
    assert classified and {c.engine for c in classified} == {"cascade"}
    # no department takes almost everything (the rules engine sent nearly all outside text to marketing)
    assert max(per_department.values()) < 0.6 * sum(per_department.values()), per_department

    # Second start on the same database: nothing is published again, nothing is stored twice.
    second = await _run_until(settings, "polled")
    assert len(second.records(settings.topic_raw)) == 0
    assert await _counts(settings.database_url) == (mentions, assignments)

    # A run that died with mentions in flight: they were marked seen but never stored.
    engine = create_engine(settings.database_url)
    try:
        async with session_factory(engine)() as s, s.begin():
            lost = list((await s.scalars(select(MentionRow.id).limit(5))).all())
            await s.execute(delete(MentionRow).where(MentionRow.id.in_(lost)))
    finally:
        await engine.dispose()
    assert await _counts(settings.database_url) != (mentions, assignments)
    third = await _run_until(settings, "polled")
    assert sorted(r.key for r in third.records(settings.topic_raw)) == sorted(lost)
    assert await _counts(settings.database_url) == (mentions, assignments)
