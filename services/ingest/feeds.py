"""Fetching and normalising RSS/Atom feeds into mentions."""

from __future__ import annotations

import asyncio
import calendar
import html
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from urllib.request import url2pathname

import feedparser
import httpx

from shared.events import Mention, MentionKind, mention_id

_TRACKING_PARAMS = re.compile(r"^(utm_\w+|fbclid|gclid|mc_cid|mc_eid|ref|ref_src)$", re.IGNORECASE)
_WS = re.compile(r"\s+")


class FeedError(Exception):
    """The feed could not be fetched or read; the message is for the source's health."""


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


@dataclass(frozen=True)
class FetchResult:
    status: int
    body: bytes
    etag: str | None
    last_modified: str | None

    @property
    def not_modified(self) -> bool:
        return self.status == 304


async def fetch(
    client: httpx.AsyncClient, source: SourceInfo, *, max_bytes: int, allow_file_urls: bool
) -> FetchResult:
    """GET the feed with conditional headers and a size cap."""
    scheme = urlsplit(source.url).scheme.lower()
    if scheme == "file":
        if not allow_file_urls:
            raise FeedError("file:// sources are disabled (MR_INGEST_ALLOW_FILE_URLS)")
        path = Path(url2pathname(urlsplit(source.url).path))
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
    if source.etag:
        headers["If-None-Match"] = source.etag
    if source.last_modified:
        headers["If-Modified-Since"] = source.last_modified
    try:
        async with client.stream("GET", source.url, headers=headers) as response:
            if response.status_code == 304:
                return FetchResult(304, b"", source.etag, source.last_modified)
            if response.status_code >= 400:
                raise FeedError(f"HTTP {response.status_code} from {source.url}")
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
            )
    except httpx.HTTPError as exc:
        raise FeedError(f"{type(exc).__name__} fetching {source.url}: {exc}") from exc


def parse(body: bytes, source: SourceInfo, *, now: datetime) -> list[Mention]:
    """Entries of a feed document as mentions. Raises FeedError when nothing readable is there."""
    parsed: Any = feedparser.parse(body, sanitize_html=False, resolve_relative_uris=False)
    if parsed.bozo and not parsed.entries:
        raise FeedError(f"not a readable feed: {parsed.get('bozo_exception')}")
    if not parsed.entries and not parsed.get("version"):
        # Well-formed but not RSS or Atom (an HTML page, an empty body): say so rather than report
        # a healthy source with nothing new.
        raise FeedError("not a feed: the document is neither RSS nor Atom")
    return [m for m in (normalise(e, source, now=now) for e in parsed.entries) if m is not None]


def normalise(entry: Any, source: SourceInfo, *, now: datetime) -> Mention | None:
    link = canonical_url(str(entry.get("link") or ""))
    guid = str(entry.get("id") or "") or link
    if not guid:
        return None
    title = html_to_text(str(entry.get("title") or ""))
    content = entry.get("content") or []
    raw = content[0].get("value", "") if content else entry.get("summary", "")
    text = html_to_text(str(raw or ""))
    if not title and not text:
        return None
    kind = MentionKind.COMMENT if source.kind == "comments" else MentionKind.POST
    in_reply_to = None
    if kind is MentionKind.COMMENT:
        target = entry.get("thr_in-reply-to") or {}
        in_reply_to = str(target.get("href") or target.get("ref") or "") or link.split("#", 1)[0] or None
    return Mention(
        id=mention_id(source.id, guid),
        source_id=source.id,
        source_name=source.name,
        kind=kind,
        url=link,
        title=title,
        text=text,
        author=str(entry.get("author") or ""),
        published_at=_published(entry, now),
        in_reply_to=in_reply_to,
        language_hint=source.language,
        influence=max(1, min(3, source.influence)),
    )


def _published(entry: Any, now: datetime) -> datetime:
    for key in ("published_parsed", "updated_parsed"):
        value = entry.get(key)
        if value:
            when = datetime.fromtimestamp(calendar.timegm(value), UTC)
            # A date in the future is a broken clock or a lie; first-seen time is the honest answer.
            return when if when <= now else now
    return now


def canonical_url(url: str) -> str:
    """The URL with its scheme and host lowercased and tracking parameters (utm_*, fbclid, …) removed.
    The fragment stays: comments without a guid are often told apart only by `#comment-N`."""
    url = url.strip()
    if not url:
        return ""
    parts = urlsplit(url)
    query = urlencode(
        [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not _TRACKING_PARAMS.match(k)]
    )
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, query, parts.fragment))


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
