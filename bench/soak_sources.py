"""Where the soak's mentions come from: local feeds that grow, and pushes to the API on a fixed schedule."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from bench.generate import AUTHORS, TITLES, mention_text
from devsupport.factories import Entry, rss
from devsupport.feedserver import FeedServer
from shared.db import create_engine, session_factory
from shared.events import mention_id
from shared.settings import Settings
from shared.sources import SourceSpec, add_source

FEED_WINDOW = 50  # entries a feed shows: the newest ones, like a real blog's feed


class Feeds:
    """`n` feeds on the local feed server, each showing its newest entries; `grow` adds entries."""

    def __init__(self, server: FeedServer, n: int, run_id: str) -> None:
        self.server = server
        self.run_id = run_id
        self.entries: list[list[Entry]] = [[] for _ in range(n)]
        self.source_ids: list[str] = []
        self.added = 0
        self._rng = random.Random(20261126)
        for i in range(n):
            self._serve(i)

    def url(self, i: int) -> str:
        return self.server.url(f"/soak/{i}.xml")

    def _serve(self, i: int) -> None:
        self.server.serve(f"/soak/{i}.xml", rss(self.entries[i][-FEED_WINDOW:], title=f"Soak feed {i}"))

    def grow(self, count: int) -> None:
        touched = set()
        for _ in range(count):
            i = self.added % len(self.entries)
            n = self.added
            self.entries[i].append(
                Entry(
                    guid=f"{self.run_id}-feed-{n}",
                    title=f"{self._rng.choice(TITLES)} ({n})",
                    text=mention_text(self._rng),
                    link=f"https://soak{i}.example.net/{self.run_id}/{n}",
                    author=self._rng.choice(AUTHORS),
                    published=datetime.now(UTC) - timedelta(seconds=1),
                    departments=frozenset(),
                )
            )
            self.added += 1
            touched.add(i)
        for i in touched:
            self._serve(i)

    def mention_ids(self) -> set[str]:
        return {
            mention_id(s, e.guid)
            for s, entries in zip(self.source_ids, self.entries, strict=True)
            for e in entries
        }


async def register_feeds(settings: Settings, feeds: Feeds) -> None:
    """The feeds as sources in the run's database, polled every 2 s; their ids into `feeds`."""
    engine = create_engine(settings.database_url)
    try:
        async with session_factory(engine)() as session:
            for i in range(len(feeds.entries)):
                spec = SourceSpec(name=f"Soak feed {i}", url=feeds.url(i), poll_interval_s=2, backfill="all")
                row, _ = await add_source(session, spec)
                feeds.source_ids.append(row.id)
            await session.commit()
    finally:
        await engine.dispose()


class Pusher:
    """POSTs batches of mentions on a fixed schedule, never waiting for an answer to send the next."""

    def __init__(self, api: httpx.AsyncClient, *, rate: float, run_id: str) -> None:
        self.api = api
        self.rate = rate
        self.run_id = run_id
        self.accepted: set[str] = set()
        self.sent = 0
        self.failures: dict[str, int] = {}
        self.max_behind_s = 0.0
        self._rng = random.Random(7)
        self._inflight: set[asyncio.Task[None]] = set()

    def _batch(self, tick: int, size: int) -> list[dict[str, Any]]:
        out = []
        for k in range(size):
            n = self.sent + k
            out.append(
                {
                    "source": f"soak-{n % 7}",
                    "url": f"https://social.example/{self.run_id}/{n}",
                    "title": self._rng.choice(TITLES) if n % 3 else "",
                    "text": mention_text(self._rng),
                    "author": self._rng.choice(AUTHORS),
                    "external_id": f"{self.run_id}-{n}",
                    "kind": "comment" if n % 5 == 0 else "post",
                    "influence": 1 + n % 3,
                }
            )
        return out

    async def _post(self, tick: int, batch: list[dict[str, Any]]) -> None:
        try:
            response = await self.api.post(
                "/v1/mentions", json=batch, headers={"Idempotency-Key": f"{self.run_id}-{tick}"}
            )
        except httpx.HTTPError as exc:
            self.failures[type(exc).__name__] = self.failures.get(type(exc).__name__, 0) + 1
            return
        if response.status_code == 202:
            self.accepted.update(response.json()["ids"])
        else:
            key = str(response.status_code)
            self.failures[key] = self.failures.get(key, 0) + 1

    async def run(self, until: float) -> None:
        step = 0.1
        t0 = time.monotonic()
        tick = 0
        while True:
            due = t0 + tick * step
            if due >= until:
                break
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                self.max_behind_s = max(self.max_behind_s, -delay)
            size = int(self.rate * (tick + 1) * step) - int(self.rate * tick * step)
            if size:
                batch = self._batch(tick, size)
                self.sent += size
                task = asyncio.create_task(self._post(tick, batch))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
            tick += 1
        if self._inflight:
            await asyncio.gather(*self._inflight)
