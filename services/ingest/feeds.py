"""Fetching and normalising RSS/Atom feeds into mentions."""

from __future__ import annotations

import asyncio
import calendar
import hashlib
import html
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import feedparser
import httpx

from services.ingest import fastfeed
from shared.canonical import canonical_url
from shared.classify import language_or_none
from shared.events import Mention, MentionKind, mention_id
from shared.netguard import UnsafeURL, local_file

_WS = re.compile(r"\s+")
# A mention's title and text are cut to these lengths (the push API's limits): an entry of megabytes would
# make an event the broker refuses, failing the whole poll of its source again and again. Even at four
# bytes a character the event stays well under the stages' 1,000,000-byte limit.
MAX_TITLE_CHARS = 1_000
MAX_TEXT_CHARS = 100_000


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
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise FeedError(f"feed is larger than {max_bytes} bytes")
                chunks.append(chunk)
            return FetchResult(
                status=response.status_code,
                body=b"".join(chunks),
                etag=response.headers.get("etag"),
                last_modified=response.headers.get("last-modified"),
                content_type=response.headers.get("content-type", ""),
                moved_to=moved_to,
            )
    except httpx.TooManyRedirects as exc:
        raise FeedError(f"too many redirects from {url}") from exc
    except httpx.HTTPError as exc:
        raise FeedError(f"{type(exc).__name__} fetching {url}: {exc}") from exc


_ENTITY_DECL = re.compile(rb"<!ENTITY", re.IGNORECASE)
_HTML_START = re.compile(rb"^\s*(<!--.*?-->\s*)*<(!doctype\s+html|html)[\s>]", re.IGNORECASE | re.DOTALL)


def looks_like_html(result: FetchResult) -> bool:
    return "html" in result.content_type.lower() or bool(_HTML_START.match(result.body[:2048]))


class _AlternateLinks(HTMLParser):
    _FEED_TYPES = (
        "application/rss+xml",
        "application/atom+xml",
        "application/rdf+xml",
        "application/feed+json",
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "link":
            return
        a = {k.lower(): (v or "") for k, v in attrs}
        rel = a.get("rel", "").lower().split()
        if "alternate" in rel and a.get("type", "").lower() in self._FEED_TYPES[:3] and a.get("href"):
            self.links.append(a["href"])


def discover_feed_url(html_body: bytes, base_url: str) -> str | None:
    """The first RSS/Atom feed an HTML page announces with <link rel="alternate">."""
    parser = _AlternateLinks()
    parser.feed(html_body[:1_000_000].decode("utf-8", "replace"))
    parser.close()
    return urljoin(base_url, parser.links[0]) if parser.links else None


def parse(body: bytes, source: SourceInfo, *, now: datetime, fast: bool = True) -> ParsedFeed:
    """Entries of a feed document as mentions, and the per-post comment feeds they announce.

    Raises FeedError when the document is not a feed, or declares XML entities (the billion-laughs and
    external-entity attacks both need them, and real feeds never do). Plain, well-formed feeds take the
    ElementTree fast path (services/ingest/fastfeed.py); everything else, or `fast=False`, feedparser.
    """
    if _ENTITY_DECL.search(body):
        raise FeedError(
            "the feed declares XML entities (<!ENTITY>); refused as a possible entity-expansion attack"
        )
    quick = fastfeed.entries(body) if fast else None
    if quick is not None:
        feed_entries: list[Any] = quick[0]
    else:
        try:
            parsed: Any = feedparser.parse(body, sanitize_html=False, resolve_relative_uris=False)
        except Exception as exc:  # feedparser itself fails on some garbage (found by fuzzing)
            raise FeedError(f"not a readable feed: {type(exc).__name__}: {exc}") from exc
        if parsed.bozo and not parsed.entries:
            raise FeedError(f"not a readable feed: {parsed.get('bozo_exception')}")
        if not parsed.entries and not parsed.get("version"):
            # A page that is neither RSS nor Atom (a login wall, a sitemap) is not a healthy, empty feed.
            raise FeedError("not a feed: the document is neither RSS nor Atom")
        feed_entries = parsed.entries
    mentions: list[Mention] = []
    comment_feeds: list[CommentFeed] = []
    for entry in feed_entries:
        try:
            mention = normalise(entry, source, now=now)
        except ValueError:
            # One unreadable entry (a broken date, an impossible field) is skipped, not the whole feed.
            continue
        if mention is None:
            continue
        mentions.append(mention)
        if mention.kind is MentionKind.POST:
            feed_url = _comment_feed_url(entry)
            if feed_url:
                count = str(entry.get("slash_comments") or entry.get("thr_total") or "").strip()
                comment_feeds.append(
                    CommentFeed(
                        url=feed_url, post_url=mention.url, count=int(count) if count.isdigit() else None
                    )
                )
    return ParsedFeed(mentions=mentions, comment_feeds=comment_feeds)


def _comment_feed_url(entry: Any) -> str | None:
    url = entry.get("wfw_commentrss")
    if url:
        return str(url).strip() or None
    for link in entry.get("links", []):
        if link.get("rel") == "replies" and "xml" in str(link.get("type", "")) and link.get("href"):
            return str(link["href"]).strip()
    return None


def normalise(entry: Any, source: SourceInfo, *, now: datetime) -> Mention | None:
    link = canonical_url(str(entry.get("link") or ""))
    guid = str(entry.get("id") or "") or link
    if not guid:
        return None
    title = _cut(html_to_text(str(entry.get("title") or "")), MAX_TITLE_CHARS)
    content = entry.get("content") or []
    raw = content[0].get("value", "") if content else entry.get("summary", "")
    text = _cut(html_to_text(str(raw or "")), MAX_TEXT_CHARS)
    if not title and not text:
        return None
    kind = MentionKind.COMMENT if source.kind == "comments" else MentionKind.POST
    in_reply_to = None
    if kind is MentionKind.COMMENT:
        target = entry.get("thr_in-reply-to") or {}
        in_reply_to = (
            source.post_url or canonical_url(str(target.get("href") or "")) or (link.split("#", 1)[0] or None)
        )
    author_detail = entry.get("author_detail") or {}
    return Mention(
        id=mention_id(source.id, guid),
        source_id=source.id,
        source_name=source.name,
        kind=kind,
        url=link,
        title=title,
        text=text,
        author=str(entry.get("author") or author_detail.get("name") or ""),
        author_url=str(author_detail.get("href") or ""),
        published_at=_published(entry, now),
        in_reply_to=in_reply_to,
        language_hint=source.language or language_or_none(f"{title}. {text}"),
        influence=max(1, min(3, source.influence)),
        content_hash=hashlib.sha256(f"{title}\n{text}".encode()).hexdigest(),
    )


def _cut(value: str, limit: int) -> str:
    """`value`, or its first `limit` characters ending at a word boundary, with an ellipsis."""
    if len(value) <= limit:
        return value
    head = value[: limit - 1]
    space = head.rfind(" ", limit - 200)
    return (head[:space] if space > 0 else head).rstrip() + "…"


def _published(entry: Any, now: datetime) -> datetime:
    for key in ("published_parsed", "updated_parsed"):
        # dict.get, not FeedParserDict.get: the latter maps a missing key to another one, with a warning.
        value = dict.get(entry, key)
        if value:
            when = datetime.fromtimestamp(calendar.timegm(value), UTC)
            # A date in the future is a broken clock or a lie; first-seen time is the honest answer.
            return when if when <= now else now
    return now


class _TextExtractor(HTMLParser):
    _SKIP = {"script", "style", "noscript", "template"}
    _BLOCK = {"p", "br", "div", "li", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "tr", "pre"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BLOCK:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self._skipping:
            self._skipping -= 1
        elif tag in self._BLOCK:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_to_text(value: str) -> str:
    """Readable text from HTML: entities decoded, scripts and styles dropped, whitespace folded."""
    if "<" not in value and "&" not in value:
        return _WS.sub(" ", value).strip()
    if "<" not in value:
        return _WS.sub(" ", html.unescape(value)).strip()
    parser = _TextExtractor()
    parser.feed(value)
    parser.close()
    # convert_charrefs decoded the entities once; decoding again would turn "&amp;lt;" into "<".
    return _WS.sub(" ", "".join(parser.parts)).strip()
