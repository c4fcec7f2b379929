"""Ingest: polls each enabled source on its own schedule and publishes new entries to `mentions.raw`.

The schedule lives in the database (`sources.next_poll_at`) and a replica takes a source by a lease
(`lease_owner`, `lease_expires_at`, set with a compare-and-set UPDATE), so any number of replicas can
run: each due source is polled by one of them, and a replica that dies loses its leases when they
expire. Nothing a second replica would need is kept in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import socket
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import ParamSpec, TypeVar
from urllib.parse import urlsplit

import httpx
from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.ingest import minhash
from services.ingest.feeds import (
    CommentFeed,
    FeedError,
    FetchResult,
    ParsedFeed,
    SourceInfo,
    discover_feed_url,
    fetch,
    looks_like_html,
    parse,
)
from shared import metrics
from shared.bus import Bus
from shared.bus.codec import encode
from shared.db import FingerprintRow, SeenEntryRow, SourceRow, insert_ignore
from shared.errors import is_transient
from shared.events import Mention, MentionIngested, utcnow
from shared.filters import FilterSyntaxError, KeywordFilter
from shared.netguard import NetPolicy, UnsafeURL, check_url, guarded_transport
from shared.settings import Settings

log = logging.getLogger(__name__)

_CE_SOURCE = "/mention-router/ingest"
P = ParamSpec("P")
T = TypeVar("T")


def source_info(row: SourceRow) -> SourceInfo:
    return SourceInfo(
        id=row.id,
        name=row.name,
        url=row.url,
        kind=row.kind,
        influence=row.influence,
        language=row.language,
        etag=row.etag,
        last_modified=row.last_modified,
        filter_query=row.filter_query,
        backfill=row.backfill,
        created_at=row.created_at,
        post_url=row.post_url,
        parent_id=row.parent_id,
        poll_interval_s=float(row.poll_interval_s),
        consecutive_failures=row.consecutive_failures,
    )


class IngestService:
    def __init__(
        self,
        *,
        settings: Settings,
        bus: Bus,
        sessions: async_sessionmaker[AsyncSession],
        clock: Callable[[], datetime] = utcnow,
        owner: str | None = None,
    ) -> None:
        self._settings = settings
        self._bus = bus
        self._sessions = sessions
        self._clock = clock
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._policy = NetPolicy.from_setting(settings.ingest_allowed_networks)
        self._limit = asyncio.Semaphore(settings.ingest_concurrency)
        self._host_limits: dict[str, asyncio.Semaphore] = {}
        # Feeds are parsed on one thread of their own: a large or hostile feed takes seconds of CPU, which on
        # the event loop would stall every other source (and, embedded, the API). One thread, not a pool:
        # parsing holds the GIL, and each more parsing thread is one more the event loop waits behind.
        self._parser = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-parse")

    def _client(self) -> httpx.AsyncClient:
        timeout = self._settings.ingest_http_timeout_s
        return httpx.AsyncClient(
            transport=guarded_transport(self._policy),
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            follow_redirects=True,
            max_redirects=5,
            headers={"User-Agent": "MentionRouter/0.1 (+feed ingest)", "Accept-Encoding": "gzip, deflate"},
            trust_env=False,
        )

    async def run(self, stop: asyncio.Event) -> None:
        await self._bus.ensure_topics([self._settings.topic_raw])
        async with self._client() as client:
            while not stop.is_set():
                try:
                    claimed = await self._claim(limit=self._settings.ingest_concurrency * 2)
                    if claimed:
                        await asyncio.gather(*(self.poll(client, s) for s in claimed))
                        continue
                    wait = await self._seconds_to_next_due()
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    log.warning("ingest: database unavailable (%s); retrying", exc)
                    wait = 2.0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)

    async def poll_all(self) -> int:
        """Poll every enabled source once, now, whatever its schedule. Returns mentions published."""
        async with self._client() as client:
            claimed = await self._claim(limit=None, due_only=False)
            counts = await asyncio.gather(*(self.poll(client, s) for s in claimed))
        return sum(counts)

    async def _seconds_to_next_due(self) -> float:
        async with self._sessions() as session:
            next_due = await session.scalar(select(func.min(SourceRow.next_poll_at)).where(SourceRow.enabled))
        refresh = self._settings.ingest_sources_refresh_s
        if next_due is None:
            return refresh
        return max(0.05, min(refresh, (next_due - self._clock()).total_seconds()))

    async def _claim(self, *, limit: int | None, due_only: bool = True) -> list[SourceInfo]:
        """Take the lease of due sources nobody holds (compare-and-set: one replica wins each)."""
        now = self._clock()
        free = or_(SourceRow.lease_expires_at.is_(None), SourceRow.lease_expires_at < now)
        due = or_(SourceRow.next_poll_at.is_(None), SourceRow.next_poll_at <= now)
        conditions = [SourceRow.enabled, free, *([due] if due_only else [])]
        query = select(SourceRow.id).where(*conditions)
        query = query.order_by(SourceRow.next_poll_at.is_(None).desc(), SourceRow.next_poll_at, SourceRow.id)
        if limit is not None:
            query = query.limit(limit)
        async with self._sessions() as session:
            candidates = list((await session.scalars(query)).all())
        if not candidates:
            return []
        expires = now + timedelta(seconds=self._settings.ingest_lease_s)
        # Compare-and-set in one statement: the conditions are checked again under the row locks, so
        # of two replicas racing for a source exactly one gets it.
        async with self._sessions() as session, session.begin():
            taken = (
                await session.scalars(
                    update(SourceRow)
                    .where(SourceRow.id.in_(candidates), *conditions)
                    .values(lease_owner=self.owner, lease_expires_at=expires)
                    .returning(SourceRow.id)
                )
            ).all()
            rows = (await session.scalars(select(SourceRow).where(SourceRow.id.in_(list(taken))))).all()
        return [source_info(r) for r in rows]

    def _host_limit(self, url: str) -> asyncio.Semaphore:
        host = urlsplit(url).netloc.lower()
        limit = self._host_limits.get(host)
        if limit is None:
            limit = self._host_limits[host] = asyncio.Semaphore(self._settings.ingest_per_host_concurrency)
        return limit

    async def poll(self, client: httpx.AsyncClient, source: SourceInfo) -> int:
        """Fetch one claimed source, publish its new entries, record its health and next poll.

        Never raises for the source's own faults: they become its last error, the poll is retried
        with backoff, and the other sources go on."""
        async with self._limit, self._host_limit(source.url):
            polled_at = self._clock()
            try:
                result, url = await self._fetch(client, source)
                if result.not_modified:
                    await self._record_success(source, polled_at, published=[], result=result, url=url)
                    return 0
                parsed = await self._parse(result.body, source, polled_at)
                metrics.count_in("ingest", len(parsed.mentions))
                mentions = await self._off_loop(self._wanted, source, parsed.mentions)
                fresh = await self._unseen(mentions)
                fresh, signatures = await self._mark_near_duplicates(fresh)
                await self._publish(fresh)
                comment_feeds = await self._fetchable(
                    self._comment_feeds(source, parsed.comment_feeds, mentions)
                )
                await self._record_success(
                    source,
                    polled_at,
                    published=fresh,
                    result=result,
                    url=url,
                    signatures=signatures,
                    comment_feeds=comment_feeds,
                    note=_skipped_note(parsed),
                )
                if fresh:
                    log.info(
                        "ingest: %s: %d new of %d entries", source.name, len(fresh), len(parsed.mentions)
                    )
                return len(fresh)
            except FeedError as exc:
                metrics.count_error("ingest", "source")
                await self._record_failure(
                    source, polled_at, str(exc), retry_after=exc.retry_after, status=exc.status
                )
            except Exception as exc:  # one source's fault must not stop the others
                metrics.count_error("ingest", "transient" if is_transient(exc) else "unexpected")
                if is_transient(exc):
                    log.warning("ingest: %s: %s: %s (will retry)", source.name, type(exc).__name__, exc)
                else:
                    log.exception("ingest: %s: unexpected error", source.name)
                await self._record_failure(source, polled_at, f"{type(exc).__name__}: {exc}")
            return 0

    async def _off_loop(self, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`work` on the parsing thread: for what takes CPU in proportion to a feed's size."""
        return await asyncio.get_running_loop().run_in_executor(
            self._parser, functools.partial(work, *args, **kwargs)
        )

    async def _parse(self, body: bytes, source: SourceInfo, now: datetime) -> ParsedFeed:
        parsed = await self._off_loop(parse, body, source, now=now)
        if parsed.skipped:
            metrics.ERRORS.labels("ingest", "entry").inc(parsed.skipped)
        return parsed

    async def _fetch(self, client: httpx.AsyncClient, source: SourceInfo) -> tuple[FetchResult, str]:
        """The feed, following one step of autodiscovery when the URL is an HTML page."""
        settings = self._settings
        max_bytes = settings.ingest_max_feed_bytes
        file_root = settings.ingest_file_root if settings.ingest_allow_file_urls else None
        result = await fetch(client, source, max_bytes=max_bytes, file_root=file_root)
        url = result.moved_to or source.url
        if result.status == 200 and looks_like_html(result):
            try:
                feed_url = discover_feed_url(result.body, url)
            except ValueError as exc:  # urljoin on a malformed link ("http://[::1")
                raise FeedError(f"{url} announces a feed URL that cannot be read: {exc}") from exc
            if feed_url is None:
                raise FeedError(f"{url} is an HTML page that announces no RSS or Atom feed")
            try:
                # A URL found in remote content: http(s) only, to an address that may be dialled.
                await check_url(feed_url, self._policy)
            except UnsafeURL as exc:
                raise FeedError(f"the feed {feed_url} announced by {url} is refused: {exc}") from exc
            log.info("ingest: %s: %s announces the feed %s", source.name, url, feed_url)
            result = await fetch(client, source, url=feed_url, max_bytes=max_bytes, file_root=file_root)
            url = result.moved_to or feed_url
            if looks_like_html(result):
                raise FeedError(f"the feed {feed_url} announced by {source.url} is an HTML page")
        return result, url

    def _wanted(self, source: SourceInfo, mentions: list[Mention]) -> list[Mention]:
        """Entries that pass the source's keyword filter and backfill policy."""
        out = mentions
        if source.filter_query:
            try:
                keep = KeywordFilter.parse(source.filter_query)
            except FilterSyntaxError as exc:
                raise FeedError(f"the source's filter cannot be read: {exc}") from exc
            out = [m for m in out if keep.matches(f"{m.title}\n{m.text}")]
        if source.backfill == "new" and source.created_at is not None:
            out = [m for m in out if m.published_at >= source.created_at]
        return out

    def _comment_feeds(
        self, source: SourceInfo, feeds: list[CommentFeed], wanted: list[Mention]
    ) -> list[CommentFeed]:
        if not self._settings.ingest_discover_comment_feeds or source.kind == "comments":
            return []
        if source.url.startswith("file:"):
            # A local file (the bundled examples) announces URLs of sites that are not there.
            return []
        posts = {m.url for m in wanted}
        # Only the comments under posts that passed the filter; a post with no comments yet waits.
        return [f for f in feeds if f.post_url in posts and f.count != 0]

    async def _fetchable(self, feeds: list[CommentFeed]) -> list[CommentFeed]:
        """The discovered comment feeds that may be polled: http(s), to addresses that may be dialled.
        A hostile blog's `wfw:commentRss` may name file:///etc/passwd or http://169.254.169.254/; such a
        feed is never registered (and would be refused again when fetched)."""
        out: list[CommentFeed] = []
        refused: dict[str, str | None] = {}
        for feed in feeds:
            try:
                parts = urlsplit(feed.url)
            except ValueError:  # "http://[::1": one bad link costs only itself
                continue
            origin = f"{parts.scheme}://{parts.netloc}".lower()
            if origin not in refused:
                try:
                    await check_url(feed.url, self._policy)
                    refused[origin] = None
                except UnsafeURL as exc:
                    refused[origin] = str(exc)
                    log.warning("ingest: comment feed %s not registered: %s", feed.url, exc)
            if refused[origin] is None:
                out.append(feed)
        return out

    async def _unseen(self, mentions: list[Mention]) -> list[Mention]:
        unique = list({m.id: m for m in mentions}.values())
        if not unique:
            return []
        seen: set[str] = set()
        ids = [m.id for m in unique]
        async with self._sessions() as session:
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                query = select(SeenEntryRow.mention_id).where(SeenEntryRow.mention_id.in_(chunk))
                seen.update((await session.scalars(query)).all())
        return [m for m in unique if m.id not in seen]

    async def _mark_near_duplicates(
        self, mentions: list[Mention]
    ) -> tuple[list[Mention], dict[str, tuple[int, ...]]]:
        """Link each mention whose text nearly repeats an earlier one (MinHash) to that original.
        Returns the mentions and the signatures of the originals, to be stored with them."""
        signatures: dict[str, tuple[int, ...]] = {}
        if not self._settings.ingest_near_duplicates or not mentions:
            return mentions, signatures
        # The text alone: syndicating sites often rewrite the headline.
        sigs = await self._off_loop(_signatures, mentions)
        keys = {mid: minhash.band_keys(sig) for mid, sig in sigs.items() if sig is not None}
        # Earlier mentions sharing a band with any of these, in one query per 100 mentions.
        index: dict[tuple[int, int], list[tuple[str, Sequence[int]]]] = {}
        wanted = list(keys.values())
        band_columns = [getattr(FingerprintRow, f"band{b}") for b in range(minhash.BANDS)]
        # Syndication happens within days; older fingerprints are not looked at.
        since = self._clock() - timedelta(days=self._settings.ingest_near_duplicate_window_days)
        async with self._sessions() as session:
            for i in range(0, len(wanted), 100):
                chunk = wanted[i : i + 100]
                query = select(FingerprintRow.mention_id, FingerprintRow.signature, *band_columns).where(
                    or_(*(col.in_({k[b] for k in chunk}) for b, col in enumerate(band_columns))),
                    FingerprintRow.created_at >= since,
                )
                for mention_id, encoded, *row_keys in (await session.execute(query)).all():
                    stored = (mention_id, minhash.decode(encoded))
                    for b, key in enumerate(row_keys):
                        index.setdefault((b, key), []).append(stored)
        out: list[Mention] = []
        for m in mentions:
            sig = sigs[m.id]
            if sig is None:
                out.append(m)
                continue
            best: tuple[float, str] | None = None
            seen: set[str] = set()
            for b, key in enumerate(keys[m.id]):
                for other_id, other in index.get((b, key), ()):
                    if other_id in seen or other_id == m.id:
                        continue
                    seen.add(other_id)
                    score = minhash.similarity(sig, other)
                    if score >= minhash.THRESHOLD and (best is None or score > best[0]):
                        best = (score, other_id)
            if best is not None:
                out.append(m.model_copy(update={"near_duplicate_of": best[1]}))
                continue
            # An original: later mentions of this same batch are compared with it too.
            signatures[m.id] = sig
            for b, key in enumerate(keys[m.id]):
                index.setdefault((b, key), []).append((m.id, sig))
            out.append(m)
        return out, signatures

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
        metrics.count_out("ingest", len(mentions))

    def _next_poll(self, source: SourceInfo, polled_at: datetime) -> datetime:
        # Jitter keeps sources added together from being polled in lockstep forever.
        return polled_at + timedelta(seconds=source.poll_interval_s * random.uniform(0.9, 1.1))

    async def _record_success(
        self,
        source: SourceInfo,
        polled_at: datetime,
        *,
        published: list[Mention],
        result: FetchResult,
        url: str,
        signatures: dict[str, tuple[int, ...]] | None = None,
        comment_feeds: list[CommentFeed] | None = None,
        note: str | None = None,
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
            fingerprints = []
            for m in published:
                sig = (signatures or {}).get(m.id)
                if sig is not None and m.near_duplicate_of is None:
                    row: dict[str, object] = {
                        "mention_id": m.id,
                        "signature": minhash.encode(sig),
                        "created_at": polled_at,
                    }
                    row.update({f"band{i}": key for i, key in enumerate(minhash.band_keys(sig))})
                    fingerprints.append(row)
            await insert_ignore(session, FingerprintRow, fingerprints, keys=["mention_id"])
            values: dict[str, object] = {
                "last_polled_at": polled_at,
                "last_success_at": polled_at,
                # A poll that had to skip entries succeeded, and says what it skipped.
                "last_error": note,
                "last_status": result.status,
                "consecutive_failures": 0,
                "items_seen": SourceRow.items_seen + len(published),
                "next_poll_at": self._next_poll(source, polled_at),
                "lease_owner": None,
                "lease_expires_at": None,
            }
            if not result.not_modified:
                values["etag"] = result.etag
                values["last_modified"] = result.last_modified
            if url != source.url:
                # A permanent redirect or an autodiscovered feed: poll the feed itself from now on.
                taken = await session.scalar(
                    select(SourceRow.id).where(SourceRow.url == url, SourceRow.id != source.id)
                )
                if taken is None:
                    log.info("ingest: %s moved from %s to %s", source.name, source.url, url)
                    values["url"] = url
                    values["updated_at"] = polled_at
            await session.execute(update(SourceRow).where(SourceRow.id == source.id).values(**values))
        if comment_feeds:
            await self._register_comment_feeds(source, comment_feeds, polled_at)

    async def _register_comment_feeds(
        self, source: SourceInfo, feeds: list[CommentFeed], now: datetime
    ) -> None:
        limit = self._settings.ingest_max_comment_feeds_per_source
        async with self._sessions() as session:
            existing = set(
                (await session.scalars(select(SourceRow.url).where(SourceRow.parent_id == source.id))).all()
            )
            room = limit - len(existing)
            new = [f for f in dict.fromkeys(feeds) if f.url not in existing][: max(0, room)]
            for feed in new:
                try:
                    async with session.begin_nested():
                        session.add(
                            SourceRow(
                                id=uuid.uuid4().hex,
                                name=f"Comments: {feed.post_url}"[:200],
                                url=feed.url,
                                kind="comments",
                                enabled=True,
                                poll_interval_s=max(
                                    int(source.poll_interval_s),
                                    self._settings.ingest_comment_feed_poll_interval_s,
                                ),
                                influence=source.influence,
                                language=source.language,
                                created_at=now,
                                updated_at=now,
                                consecutive_failures=0,
                                items_seen=0,
                                backfill="all",
                                parent_id=source.id,
                                post_url=feed.post_url,
                            )
                        )
                except IntegrityError:
                    continue  # the same feed is registered already (by URL)
            await session.commit()
        if new:
            log.info("ingest: %s: discovered %d comment feed(s)", source.name, len(new))

    async def _record_failure(
        self,
        source: SourceInfo,
        polled_at: datetime,
        error: str,
        *,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        log.warning("ingest: %s: %s", source.name, error)
        failures = source.consecutive_failures + 1
        # Exponential backoff from the source's own interval, capped, and never sooner than the
        # server's Retry-After.
        delay = min(self._settings.ingest_max_backoff_s, source.poll_interval_s * 2 ** min(failures, 16))
        delay = max(delay, retry_after or 0.0)
        try:
            async with self._sessions() as session, session.begin():
                await session.execute(
                    update(SourceRow)
                    .where(SourceRow.id == source.id)
                    .values(
                        last_polled_at=polled_at,
                        last_error=error[:2000],
                        last_status=status,
                        consecutive_failures=SourceRow.consecutive_failures + 1,
                        next_poll_at=polled_at + timedelta(seconds=delay),
                        lease_owner=None,
                        lease_expires_at=None,
                    )
                )
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("ingest: could not record the failure of %s: %s", source.name, exc)


def _signatures(mentions: list[Mention]) -> dict[str, tuple[int, ...] | None]:
    # 40 ms for a text of 100,000 characters: a feed of them took the event loop for seconds.
    return {m.id: minhash.signature(m.text) for m in mentions}


def _skipped_note(parsed: ParsedFeed) -> str | None:
    """What a source's health says of the entries a successful poll had to skip (each costs only itself)."""
    if not parsed.skipped:
        return None
    count = "1 entry" if parsed.skipped == 1 else f"{parsed.skipped} entries"
    return f"{count} could not be read and skipped (the rest were read); the first: {parsed.skip_reason}"
