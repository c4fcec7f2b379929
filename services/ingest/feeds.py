"""Fetching and normalising RSS/Atom feeds into mentions."""

from __future__ import annotations

import asyncio
import calendar
import hashlib
import io
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import feedparser
import httpx

from services.ingest import fastfeed, xmlsafety
from services.ingest.htmltext import discover_feed_url as discover_feed_url
from services.ingest.htmltext import html_to_text
from shared.canonical import canonical_url
from shared.events import Mention, MentionKind
from shared.intake import new_mention
from shared.netguard import UnsafeURL, local_file

# A mention's title and text are cut to these lengths (the push API's limits): an entry of megabytes would
# make an event the broker refuses, failing the whole poll of its source again and again. Even at four
# bytes a character the event stays well under the stages' 1,000,000-byte limit.
MAX_TITLE_CHARS = 1_000
MAX_TEXT_CHARS = 100_000
MAX_AUTHOR_CHARS = 500
# A link longer than this is no link (browsers give up near 2,000 characters); an entry that has one is
# skipped, as it would otherwise make an event the broker refuses.
MAX_URL_CHARS = 8_000
# An entry's markup is read up to this many times those lengths: ample for markup around text that is cut
# to them anyway, and a bound on the work one entry can ask for.
_MARKUP = 5
# A document that is not well-formed XML goes to feedparser's lenient parser, which takes 4-6 s per
# megabyte of hostile markup ("<a<a<a…"); past this size it is refused instead.
MAX_LENIENT_BYTES = 2_000_000


class FeedError(Exception):
    """The feed could not be fetched or read; the message is for the source's health."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        # Seconds the server asked us to wait (429/503 Retry-After), when it said.
        self.retry_after = retry_after


@dataclass(frozen=True)
class SourceInfo:
    id: str
    name: str
    url: str
    kind: str
    influence: int
    language: str | None
    etag: str | None = None
    last_modified: str | None = None
    filter_query: str | None = None
    backfill: str = "all"
    created_at: datetime | None = None
    # For a per-post comment feed: the post it belongs to.
    post_url: str | None = None
    parent_id: str | None = None
    poll_interval_s: float = 300.0
    consecutive_failures: int = 0


@dataclass(frozen=True)
class FetchResult:
    status: int
    body: bytes
    etag: str | None
    last_modified: str | None
    content_type: str = ""
    # Where a permanent redirect (301/308) sent us: the source's new URL.
    moved_to: str | None = None

    @property
    def not_modified(self) -> bool:
        return self.status == 304


@dataclass(frozen=True)
class CommentFeed:
    """A per-post comment feed announced by an entry (wfw:commentRss, Atom replies link)."""

    url: str
    post_url: str
    count: int | None


@dataclass(frozen=True)
class ParsedFeed:
    mentions: list[Mention]
    comment_feeds: list[CommentFeed] = field(default_factory=list)
    # Entries that could not be read (each costs only itself), and why the first one could not.
    skipped: int = 0
    skip_reason: str | None = None


def _retry_after(value: str | None, now: datetime) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


async def fetch(
    client: httpx.AsyncClient,
    source: SourceInfo,
    *,
    max_bytes: int,
    file_root: Path | None,
    url: str | None = None,
) -> FetchResult:
    """GET the feed with conditional headers and a size cap (counted after gzip/deflate decoding).

    A file:// URL is read only when it is the source's own URL (an operator registered it: never one found
    in remote content, a discovered comment feed included), and only under `file_root` (None: not at all)."""
    url = url or source.url
    scheme = urlsplit(url).scheme.lower()
    if scheme == "file":
        return await _read_file(source, url, max_bytes=max_bytes, file_root=file_root)
    if scheme not in ("http", "https"):
        raise FeedError(f"unsupported URL scheme {scheme!r}")
    headers = {"Accept": "application/rss+xml, application/atom+xml, application/xml;q=0.9, */*;q=0.5"}
    if source.etag and url == source.url:
        headers["If-None-Match"] = source.etag
    if source.last_modified and url == source.url:
        headers["If-Modified-Since"] = source.last_modified
    try:
        async with client.stream("GET", url, headers=headers) as response:
            moved_to = None
            hops = [*response.history, response]
            # Permanent only if every hop up to here was permanent: a 302 in between means "not moved".
            if response.history and all(h.status_code in (301, 308) for h in response.history):
                moved_to = str(hops[-1].url)
            if response.status_code == 304:
                return FetchResult(304, b"", source.etag, source.last_modified, moved_to=moved_to)
            if response.status_code in (429, 503):
                raise FeedError(
                    f"HTTP {response.status_code} from {url}",
                    status=response.status_code,
                    retry_after=_retry_after(response.headers.get("retry-after"), datetime.now(UTC)),
                )
            if response.status_code >= 400:
                raise FeedError(f"HTTP {response.status_code} from {url}", status=response.status_code)
            declared = response.headers.get("content-length")
            if (
                declared
                and declared.isdigit()
                and int(declared) > max_bytes
                and "content-encoding" not in response.headers
            ):
                raise FeedError(f"feed is larger than {max_bytes} bytes (Content-Length {declared})")
            body = await _read_capped(response, max_bytes)
            return FetchResult(
                status=response.status_code,
                body=body,
                etag=response.headers.get("etag"),
                last_modified=response.headers.get("last-modified"),
                content_type=response.headers.get("content-type", ""),
                moved_to=moved_to,
            )
    except httpx.TooManyRedirects as exc:
        raise FeedError(f"too many redirects from {url}") from exc
    except httpx.HTTPError as exc:
        raise FeedError(f"{type(exc).__name__} fetching {url}: {exc}") from exc


async def _read_file(source: SourceInfo, url: str, *, max_bytes: int, file_root: Path | None) -> FetchResult:
    """A file:// source's document: only its own registered URL, only under `file_root`."""
    if url != source.url or source.parent_id is not None:
        raise FeedError(f"{url}: a file:// URL found in remote content is never read")
    if file_root is None:
        raise FeedError("file:// sources are disabled (MR_INGEST_ALLOW_FILE_URLS)")
    try:
        path = local_file(url, file_root)
    except UnsafeURL as exc:
        raise FeedError(str(exc)) from exc
    try:
        data = await asyncio.to_thread(path.read_bytes)
    except OSError as exc:
        raise FeedError(f"cannot read {path}: {exc.strerror}") from exc
    if len(data) > max_bytes:
        raise FeedError(f"feed is larger than {max_bytes} bytes")
    return FetchResult(status=200, body=data, etag=None, last_modified=None)


async def _read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    """The body, decoded, refused as soon as it passes `max_bytes` (a lying or absent Content-Length)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise FeedError(f"feed is larger than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


_HTML_START = re.compile(rb"<(!doctype\s+html|html)[\s>]", re.IGNORECASE)


def looks_like_html(result: FetchResult) -> bool:
    if "html" in result.content_type.lower():
        return True
    # Comments before the first tag are skipped with str.find: a regex with a repeated lazy group
    # (`(<!--.*?-->\s*)*`) took 6 s on 25 empty comments, and doubled with each one more, on the event loop.
    head = result.body[:2048].lstrip()
    while head.startswith(b"<!--"):
        end = head.find(b"-->", 4)
        if end < 0:
            return False
        head = head[end + 3 :].lstrip()
    return bool(_HTML_START.match(head))


def parse(body: bytes, source: SourceInfo, *, now: datetime, fast: bool = True) -> ParsedFeed:
    """Entries of a feed document as mentions, and the per-post comment feeds they announce.

    Raises FeedError when the document is not a feed, declares XML entities (the billion-laughs and
    external-entity attacks both need them, and real feeds never do), or is too large to parse leniently.
    Plain, well-formed feeds take the ElementTree fast path (services/ingest/fastfeed.py); everything else,
    or `fast=False`, feedparser. CPU-bound (a 10 MB feed takes seconds): ingest calls it off the event loop.
    """
    try:
        data, encoding = xmlsafety.decode(body)
    except (ValueError, LookupError, TypeError) as exc:  # a declared encoding no codec takes ("utf\0-8")
        raise FeedError(f"not a readable feed: {type(exc).__name__}: {exc}") from exc
    if xmlsafety.declares_entities(data):
        raise FeedError(
            "the feed declares XML entities (<!ENTITY>); refused as a possible entity-expansion attack"
        )
    quick = fastfeed.entries(data) if fast and encoding else None
    if quick is not None:
        feed_entries: list[Any] = quick[0]
    else:
        feed_entries = _feedparser_entries(body, data, encoding)
    mentions: list[Mention] = []
    comment_feeds: list[CommentFeed] = []
    skipped: list[str] = []
    for entry in feed_entries:
        try:
            mention = normalise(entry, source, now=now)
            comment_feed = _comment_feed(entry, mention) if mention is not None else None
        except Exception as exc:  # noqa: BLE001 - one entry's fault costs that entry only, and is counted
            skipped.append(f"{type(exc).__name__}: {exc}"[:300])
            continue
        if mention is None:
            continue
        mentions.append(mention)
        if comment_feed is not None:
            comment_feeds.append(comment_feed)
    return ParsedFeed(
        mentions=mentions,
        comment_feeds=comment_feeds,
        skipped=len(skipped),
        skip_reason=skipped[0] if skipped else None,
    )


def _feedparser_entries(body: bytes, data: bytes, encoding: str) -> list[Any]:
    # Well-formed, feedparser reads it strictly, in linear time; otherwise leniently, and only if it is small.
    if len(data) > MAX_LENIENT_BYTES and not (encoding and xmlsafety.well_formed(data)):
        raise FeedError(
            f"the feed is not well-formed XML and larger than {MAX_LENIENT_BYTES} bytes; "
            "refused rather than parsed leniently (that takes seconds per megabyte of hostile markup)"
        )
    try:
        # A file-like object: given bytes, feedparser first tries to open them as a local file name (a feed
        # whose body is "/dev/zero" would be read from this machine, forever).
        parsed: Any = feedparser.parse(io.BytesIO(body), sanitize_html=False, resolve_relative_uris=False)
    except Exception as exc:  # feedparser itself fails on some garbage (found by fuzzing)
        raise FeedError(f"not a readable feed: {type(exc).__name__}: {exc}") from exc
    if parsed.bozo and not parsed.entries:
        raise FeedError(f"not a readable feed: {parsed.get('bozo_exception')}")
    if not parsed.entries and not parsed.get("version"):
        # A page that is neither RSS nor Atom (a login wall, a sitemap) is not a healthy, empty feed.
        raise FeedError("not a feed: the document is neither RSS nor Atom")
    return list(parsed.entries)


def _comment_feed(entry: Any, mention: Mention) -> CommentFeed | None:
    if mention.kind is not MentionKind.POST:
        return None
    url = _comment_feed_url(entry)
    if not url:
        return None
    return CommentFeed(
        url=url, post_url=mention.url, count=_count(entry.get("slash_comments") or entry.get("thr_total"))
    )


def _count(value: Any) -> int | None:
    """A comment count as the feed gives it, or None when it is not a plain number ("²", "lots", 10⁹⁹⁹)."""
    text = str(value or "").strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        return None
    return int(text)


def _comment_feed_url(entry: Any) -> str | None:
    url = entry.get("wfw_commentrss")
    if url:
        return str(url).strip() or None
    for link in entry.get("links", []):
        if link.get("rel") == "replies" and "xml" in str(link.get("type", "")) and link.get("href"):
            return str(link["href"]).strip()
    return None


def normalise(entry: Any, source: SourceInfo, *, now: datetime) -> Mention | None:
    """The mention an entry makes, or None when it has nothing to say. Raises (ValueError and others) when
    the entry cannot be read; `parse` skips it then and counts it."""
    link = canonical_url(_url(entry.get("link"), "link"))
    # Markup is cut before it is read: the text is cut to MAX_TEXT_CHARS anyway, and reading is linear
    # in what it is given (services/ingest/htmltext.py).
    title = _cut(html_to_text(str(entry.get("title") or "")[: MAX_TITLE_CHARS * _MARKUP]), MAX_TITLE_CHARS)
    content = entry.get("content") or []
    raw = content[0].get("value", "") if content else entry.get("summary", "")
    text = _cut(html_to_text(str(raw or "")[: MAX_TEXT_CHARS * _MARKUP]), MAX_TEXT_CHARS)
    if not title and not text:
        return None
    author_detail = entry.get("author_detail") or {}
    author = _cut(str(entry.get("author") or author_detail.get("name") or ""), MAX_AUTHOR_CHARS)
    dated = _entry_date(entry)
    guid = str(entry.get("id") or "") or link
    if not guid:
        # Neither a guid nor a link: the entry is known by what it says, who said it and when (if it
        # says), so that the next poll finds the same id and publishes nothing twice.
        said = f"{title}\n{text}\n{author}\n{dated.isoformat() if dated else ''}"
        guid = "content:" + hashlib.sha256(said.encode()).hexdigest()
    kind = MentionKind.COMMENT if source.kind == "comments" else MentionKind.POST
    in_reply_to = None
    if kind is MentionKind.COMMENT:
        target = entry.get("thr_in-reply-to")
        # thr:in-reply-to is an element with attributes; one with only text arrives as a string.
        href = target.get("href") if isinstance(target, dict) else None
        in_reply_to = (
            source.post_url or canonical_url(_url(href, "thr:in-reply-to")) or link.split("#")[0] or None
        )
    return new_mention(
        source_id=source.id,
        source_name=source.name,
        entry_key=guid,
        kind=kind,
        url=link,
        title=title,
        text=text,
        author=author,
        author_url=_url(author_detail.get("href"), "author's link"),
        published_at=dated,
        now=now,
        in_reply_to=in_reply_to,
        language=source.language,
        influence=source.influence,
    )


def _url(value: Any, what: str) -> str:
    url = str(value or "")
    if len(url) > MAX_URL_CHARS:
        raise ValueError(f"the entry's {what} is longer than {MAX_URL_CHARS} characters")
    return url


def _cut(value: str, limit: int) -> str:
    """`value`, or its first `limit` characters ending at a word boundary, with an ellipsis."""
    if len(value) <= limit:
        return value
    head = value[: limit - 1]
    space = head.rfind(" ", limit - 200)
    return (head[:space] if space > 0 else head).rstrip() + "…"


def _entry_date(entry: Any) -> datetime | None:
    """When the entry says it was published, else updated, else created (dcterms:created); None if never."""
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        # dict.get, not FeedParserDict.get: the latter maps a missing key to another one, with a warning.
        value = dict.get(entry, key)
        if value:
            try:
                return datetime.fromtimestamp(calendar.timegm(value), UTC)
            except (ValueError, OverflowError):
                continue  # year 0 or 10000 ("9999-12-31T23:59:59-23:59"): no date a datetime can hold
    return None
