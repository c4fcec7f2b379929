"""Ingest: polls each enabled source on its own schedule and publishes new entries to `mentions.raw`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from datetime import datetime

import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.ingest.feeds import FeedError, SourceInfo, fetch, parse
from shared.bus import Bus
from shared.bus.codec import encode
from shared.db import SeenEntryRow, SourceRow, insert_ignore
from shared.errors import is_transient
from shared.events import Mention, MentionIngested, utcnow
from shared.settings import Settings

log = logging.getLogger(__name__)

_CE_SOURCE = "/mention-router/ingest"


class IngestService:
    def __init__(
        self,
        *,
        settings: Settings,
        bus: Bus,
        sessions: async_sessionmaker[AsyncSession],
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._settings = settings
        self._bus = bus
        self._sessions = sessions
        self._clock = clock
        self._limit = asyncio.Semaphore(settings.ingest_concurrency)
        self._next_due: dict[str, float] = {}

    def _client(self) -> httpx.AsyncClient:
        timeout = self._settings.ingest_http_timeout_s
        return httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            follow_redirects=True,
            max_redirects=5,
            headers={"User-Agent": "MentionRouter/0.1 (+feed ingest)"},
            trust_env=False,
        )

    async def run(self, stop: asyncio.Event) -> None:
        await self._bus.ensure_topics([self._settings.topic_raw])
        async with self._client() as client:
            while not stop.is_set():
                try:
                    sources = await self._load_sources()
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    log.warning("ingest: cannot read sources (%s); retrying", exc)
                    sources = []
                now = time.monotonic()
                due = [s for s in sources if self._next_due.get(s[0].id, 0.0) <= now]
                if due:
                    await asyncio.gather(*(self._poll_scheduled(client, s, interval) for s, interval in due))
                wait = self._settings.ingest_sources_refresh_s
                if self._next_due:
                    wait = min(wait, max(0.05, min(self._next_due.values()) - time.monotonic()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)

    async def poll_all(self) -> int:
        """Poll every enabled source once, now. Returns how many mentions were published."""
        async with self._client() as client:
            sources = await self._load_sources()
            counts = await asyncio.gather(*(self.poll(client, s) for s, _ in sources))
        return sum(counts)

    async def _poll_scheduled(self, client: httpx.AsyncClient, source: SourceInfo, interval: float) -> None:
        await self.poll(client, source)
        # Jitter keeps sources added together from being polled in lockstep forever.
        self._next_due[source.id] = time.monotonic() + interval * random.uniform(0.9, 1.1)

    async def _load_sources(self) -> list[tuple[SourceInfo, float]]:
        async with self._sessions() as session:
            rows = (await session.scalars(select(SourceRow).where(SourceRow.enabled))).all()
        live = {r.id for r in rows}
        for gone in set(self._next_due) - live:
            del self._next_due[gone]
        return [
            (
                SourceInfo(
                    id=r.id,
                    name=r.name,
                    url=r.url,
                    kind=r.kind,
                    influence=r.influence,
                    language=r.language,
                    etag=r.etag,
                    last_modified=r.last_modified,
                ),
                float(r.poll_interval_s or self._settings.ingest_default_poll_interval_s),
            )
            for r in rows
        ]

    async def poll(self, client: httpx.AsyncClient, source: SourceInfo) -> int:
        """Fetch one source, publish its unseen entries, record its health. Never raises for the
        source's own faults: they are stored as its last error and the other sources go on."""
        async with self._limit:
            polled_at = self._clock()
            try:
                result = await fetch(
                    client,
                    source,
                    max_bytes=self._settings.ingest_max_feed_bytes,
                    allow_file_urls=self._settings.ingest_allow_file_urls,
                )
                if result.not_modified:
                    await self._record(source, polled_at, error=None, published=[])
                    return 0
                mentions = parse(result.body, source, now=polled_at)
                fresh = await self._unseen(mentions)
                await self._publish(fresh)
                await self._record(
                    source,
                    polled_at,
                    error=None,
                    published=fresh,
                    etag=result.etag,
                    last_modified=result.last_modified,
                )
                if fresh:
                    log.info("ingest: %s: %d new of %d entries", source.name, len(fresh), len(mentions))
                return len(fresh)
            except FeedError as exc:
                await self._record_failure(source, polled_at, str(exc))
            except Exception as exc:
                if is_transient(exc):
                    log.warning("ingest: %s: %s: %s (will retry)", source.name, type(exc).__name__, exc)
                else:
                    log.exception("ingest: %s: unexpected error", source.name)
                await self._record_failure(source, polled_at, f"{type(exc).__name__}: {exc}")
            return 0

    async def _unseen(self, mentions: list[Mention]) -> list[Mention]:
        unique = list({m.id: m for m in mentions}.values())
        if not unique:
            return []
        seen: set[str] = set()
        ids = [m.id for m in unique]
        async with self._sessions() as session:
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                seen.update(
                    (
                        await session.scalars(
                            select(SeenEntryRow.mention_id).where(SeenEntryRow.mention_id.in_(chunk))
                        )
                    ).all()
                )
        return [m for m in unique if m.id not in seen]

    async def _publish(self, mentions: list[Mention]) -> None:
        if not mentions:
            return
        topic = self._settings.topic_raw
        await self._bus.send(
            [
                encode(topic=topic, key=m.id, event=MentionIngested(mention=m), source=_CE_SOURCE)
                for m in mentions
            ]
        )

    async def _record(
        self,
        source: SourceInfo,
        polled_at: datetime,
        *,
        error: str | None,
        published: list[Mention],
        etag: str | None = None,
        last_modified: str | None = None,
    ) -> None:
        async with self._sessions() as session, session.begin():
            # Marked seen only after the broker acknowledged them: a crash in between re-publishes,
            # and the mention id makes that harmless downstream.
            await insert_ignore(
                session,
                SeenEntryRow,
                [{"mention_id": m.id, "source_id": source.id, "first_seen_at": polled_at} for m in published],
                keys=["mention_id"],
            )
            values: dict[str, object] = {
                "last_polled_at": polled_at,
                "last_success_at": polled_at,
                "last_error": error,
                "consecutive_failures": 0,
                "items_seen": SourceRow.items_seen + len(published),
            }
            if etag is not None or last_modified is not None:
                values["etag"] = etag
                values["last_modified"] = last_modified
            await session.execute(update(SourceRow).where(SourceRow.id == source.id).values(**values))

    async def _record_failure(self, source: SourceInfo, polled_at: datetime, error: str) -> None:
        log.warning("ingest: %s: %s", source.name, error)
        try:
            async with self._sessions() as session, session.begin():
                await session.execute(
                    update(SourceRow)
                    .where(SourceRow.id == source.id)
                    .values(
                        last_polled_at=polled_at,
                        last_error=error[:2000],
                        consecutive_failures=SourceRow.consecutive_failures + 1,
                    )
                )
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("ingest: could not record the failure of %s: %s", source.name, exc)
