"""Fuzzing the feed path: whatever bytes a server sends, `parse` returns mentions or raises FeedError,
in bounded time; it never crashes ingest with anything else."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from xml.sax.saxutils import escape

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devsupport.factories import atom, make_entries, rss
from services.ingest.feeds import FeedError, FetchResult, ParsedFeed, SourceInfo, looks_like_html, parse

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
SOURCE = SourceInfo(
    id="s", name="fuzz", url="https://fuzz.example/feed", kind="feed", influence=1, language=None
)
COMMENTS = SourceInfo(
    id="c", name="fuzz", url="https://fuzz.example/c", kind="comments", influence=2, language="en"
)
SEEDS = [
    rss(make_entries(3, prefix="rss")),
    atom(make_entries(3, prefix="atom")),
    b'<?xml version="1.0"?><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
    b'xmlns="http://purl.org/rss/1.0/"><channel rdf:about="x"><title>t</title></channel>'
    b'<item rdf:about="https://x.example/1"><title>One</title><link>https://x.example/1</link>'
    b"<description>first</description></item></rdf:RDF>",
]

# MR_FUZZ_EXAMPLES=5000 for a longer hunt; the default keeps `make test` quick.
FUZZ = settings(
    max_examples=int(os.environ.get("MR_FUZZ_EXAMPLES", "150")),
    deadline=2000,
    suppress_health_check=[HealthCheck.too_slow],
)


def _parse_or_feed_error(body: bytes, source: SourceInfo = SOURCE) -> ParsedFeed | None:
    try:
        result = parse(body, source, now=NOW)
    except FeedError as exc:
        assert str(exc), "a FeedError always says what is wrong"
        return None
    for m in result.mentions:
        assert m.published_at <= NOW
        assert m.id and m.source_id == source.id
        assert "<script" not in m.text.lower()
    return result


@FUZZ
@given(seed=st.sampled_from(SEEDS), data=st.data())
def test_mutated_feeds(seed: bytes, data: st.DataObject) -> None:
    body = bytearray(seed)
    for _ in range(data.draw(st.integers(1, 8))):
        op = data.draw(st.sampled_from(["flip", "delete", "insert", "truncate", "duplicate"]))
        if not body:
            break
        i = data.draw(st.integers(0, len(body) - 1))
        if op == "flip":
            body[i] = data.draw(st.integers(0, 255))
        elif op == "delete":
            del body[i : i + data.draw(st.integers(1, 40))]
        elif op == "insert":
            body[i:i] = data.draw(st.binary(min_size=1, max_size=40))
        elif op == "truncate":
            del body[i:]
        else:
            body[i:i] = body[max(0, i - 200) : i]
    _parse_or_feed_error(bytes(body))
    _parse_or_feed_error(bytes(body), COMMENTS)
    looks_like_html(FetchResult(status=200, body=bytes(body), etag=None, last_modified=None))


@FUZZ
@given(
    title=st.text(max_size=200),
    text=st.text(max_size=2000),
    author=st.text(max_size=50),
    guid=st.text(max_size=80),
    date=st.one_of(
        st.text(max_size=40), st.sampled_from(["Mon, 02 Nov 2026 10:00:00 +0000", "9999-99-99", ""])
    ),
    encoding=st.sampled_from(["utf-8", "iso-8859-1", "utf-16"]),
)
def test_generated_feeds(title: str, text: str, author: str, guid: str, date: str, encoding: str) -> None:
    def clean(value: str) -> str:
        # Characters XML 1.0 cannot carry at all; the rest goes in escaped, HTML and all.
        return "".join(
            c for c in value if c in "\t\n\r" or ("\x20" <= c <= "\ud7ff") or ("\ue000" <= c <= "\ufffd")
        )

    item = (
        f"<item><guid>{escape(clean(guid))}</guid><title>{escape(clean(title))}</title>"
        f"<dc:creator>{escape(clean(author))}</dc:creator><pubDate>{escape(clean(date))}</pubDate>"
        f"<description>{escape(clean(text))}</description></item>"
    )
    doc = (
        f'<?xml version="1.0" encoding="{encoding}"?><rss version="2.0" '
        f'xmlns:dc="http://purl.org/dc/elements/1.1/"><channel><title>t</title>{item}</channel></rss>'
    )
    try:
        body = doc.encode(encoding)
    except UnicodeEncodeError:
        return
    result = _parse_or_feed_error(body)
    if result is not None and result.mentions:
        mention = result.mentions[0]
        assert "<" not in mention.text or "<" in clean(text), "HTML is turned into text"


@settings(max_examples=20, deadline=5000)
@given(depth=st.integers(1, 5), width=st.integers(2, 12))
def test_entity_expansion_is_refused_at_any_size(depth: int, width: int) -> None:
    entities = ['<!ENTITY e0 "lol">'] + [
        f'<!ENTITY e{n} "{"".join(f"&e{n - 1};" for _ in range(width))}">' for n in range(1, depth + 1)
    ]
    body = (
        f'<?xml version="1.0"?><!DOCTYPE rss [{"".join(entities)}]><rss version="2.0"><channel>'
        f"<title>&e{depth};</title><item><title>&e{depth};</title><guid>1</guid></item></channel></rss>"
    ).encode()
    try:
        parse(body, SOURCE, now=NOW)
    except FeedError as exc:
        assert "declares XML entities" in str(exc)
    else:
        raise AssertionError("an entity declaration was not refused")


def test_regressions_found_by_fuzzing() -> None:
    # feedparser raised UnicodeDecodeError / ValueError on these instead of reporting a bad feed.
    for body in (b"\x80" + SEEDS[0][1:], SEEDS[0].replace(b"<title>", b"<title>\x00", 1)[:300]):
        _parse_or_feed_error(body)
    # A link urlsplit cannot take apart drops nothing else in the feed.
    broken = SEEDS[2].replace(b"<link>https://x.example/1", b"<link>https://[x.example/1")
    result = _parse_or_feed_error(broken)
    assert result is not None and [m.title for m in result.mentions] == ["One"]
