"""The ElementTree fast path gives exactly what feedparser gives, and steps aside when unsure.

Three sources of documents: the example feeds, a corpus of hand-written fixtures about one way of writing a
feed each (tests/fixtures/parity/, see its README), and documents generated from fragments that real feeds
use and that feedparser reads in its own particular way."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devsupport.factories import atom, make_entries, rss
from services.ingest import fastfeed, xmlsafety
from services.ingest.feeds import FeedError, ParsedFeed, SourceInfo, parse
from shared.settings import REPO_ROOT

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
EXAMPLES = sorted((REPO_ROOT / "examples" / "feeds").glob("*.xml"))
PARITY = sorted((REPO_ROOT / "tests" / "fixtures" / "parity").glob("*.xml"))


def _source(kind: str = "feed") -> SourceInfo:
    return SourceInfo(
        id="src", name="Src", url="https://x.example/feed", kind=kind, influence=2, language=None
    )


def _both(body: bytes, kind: str = "feed") -> tuple[ParsedFeed, ParsedFeed]:
    return parse(body, _source(kind), now=NOW, fast=True), parse(body, _source(kind), now=NOW, fast=False)


def _accepted(body: bytes) -> bool:
    return fastfeed.entries(xmlsafety.decode(body)[0]) is not None


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: Path(p).name)
@pytest.mark.parametrize("kind", ["feed", "comments"])
def test_the_example_feeds_parse_alike(path: Path, kind: str) -> None:
    fast, slow = _both(path.read_bytes(), kind)
    assert fast == slow
    assert fast.mentions


def test_the_examples_take_the_fast_path() -> None:
    assert [p.name for p in EXAMPLES if not _accepted(p.read_bytes())] == []


def test_the_parity_corpus_is_there() -> None:
    names = {p.name for p in PARITY}
    assert len(names) >= 50
    assert sum(n.startswith("accept-") for n in names) >= 20
    assert sum(n.startswith("decline-") for n in names) >= 20


@pytest.mark.parametrize("path", PARITY, ids=lambda p: Path(p).name)
@pytest.mark.parametrize("kind", ["feed", "comments"])
def test_the_fast_path_declines_or_agrees_with_feedparser(path: Path, kind: str) -> None:
    body = path.read_bytes()
    accepted = _accepted(body)
    if path.name.startswith("accept-"):
        assert accepted, "the fast path is meant to read this one"
    elif path.name.startswith("decline-"):
        assert not accepted, "the fast path does not model what feedparser does here"
    fast, slow = _both(body, kind)
    assert fast == slow
    assert slow.mentions, "every fixture has something to read"


# Documents put together from fragments. Each fragment is something a real feed does, or a way of writing
# one that feedparser reads in its own way; duplicates and odd orders are part of the point.
RSS_ITEM_PARTS = [
    "<title>A title</title>",
    "<title type='html'>An &lt;em&gt;html&lt;/em&gt; title</title>",
    "<dc:title>A Dublin Core title</dc:title>",
    "<description>&lt;p&gt;A description&lt;/p&gt;</description>",
    "<dc:description>A Dublin Core description</dc:description>",
    "<summary>A summary</summary>",
    "<content:encoded><![CDATA[<p>Full <b>content</b></p>]]></content:encoded>",
    "<xhtml:body><xhtml:p>xhtml body</xhtml:p></xhtml:body>",
    "<fullitem>full item</fullitem>",
    "<link>https://x.example/a?b=1&amp;amp;c=2</link>",
    "<link>relative/path</link>",
    "<link href='https://x.example/href'/>",
    "<link></link>",
    "<guid>https://x.example/guid</guid>",
    "<guid isPermaLink='false'>opaque-id</guid>",
    "<guid isPermaLink='False'>https://x.example/capital</guid>",
    "<id>https://x.example/id</id>",
    "<author>ann@example.com (Ann)</author>",
    "<dc:creator>Ann Creator</dc:creator>",
    "<pubDate>Mon, 02 Feb 2026 10:30:00 +0100</pubDate>",
    "<pubDate>not a date</pubDate>",
    "<dc:date>2026-01-15T08:00:00+02:00</dc:date>",
    "<dcterms:modified>2020-03-04T05:06:07Z</dcterms:modified>",
    "<dcterms:created>2019-01-02T03:04:05Z</dcterms:created>",
    "<dcterms:issued>2018-01-02T03:04:05Z</dcterms:issued>",
    "<category>cat</category>",
    "<comments>https://x.example/comments</comments>",
    "<enclosure url='https://x.example/a.mp3' type='audio/mpeg' length='1'/>",
    "<source url='https://y.example/'>Elsewhere</source>",
    "<wfw:commentRss>https://x.example/comments.xml</wfw:commentRss>",
    "<slash:comments>3</slash:comments>",
    "<slash:comments>\u00b2</slash:comments>",
    "<media:title>Media title</media:title>",
    "<media:thumbnail url='https://x.example/t.png'/>",
    "<atom:link rel='replies' type='application/atom+xml' href='https://x.example/r.xml'/>",
    "<thr:in-reply-to ref='p' href='https://x.example/p'/>",
    "<title>It\u0092s \u0093windows\u0094 in C1</title>",
    "<title>caf\u00c3\u00a9 mojibake</title>",
]
ATOM_ENTRY_PARTS = [
    "<id>urn:e:1</id>",
    "<id>https://x.example/id-link</id>",
    "<title>A title</title>",
    "<title type='html'>An &lt;b&gt;html&lt;/b&gt; title</title>",
    "<title type='xhtml'><div xmlns='http://www.w3.org/1999/xhtml'>xhtml</div></title>",
    "<summary>A summary</summary>",
    "<summary type='text' mode='base64'>SGVsbG8=</summary>",
    "<content type='html'>&lt;p&gt;Content&lt;/p&gt;</content>",
    "<content type='image/png'>iVBORw0KGgo=</content>",
    "<content src='https://x.example/c.html'/>",
    "<link href='https://x.example/alt'/>",
    "<link rel='alternate' type='text/html' href='https://x.example/alt2'/>",
    "<link rel='self' href='https://x.example/self'/>",
    "<link rel='replies' type='application/atom+xml' href='https://x.example/replies.xml' thr:count='2'/>",
    "<link rel='alternate' href='relative/alt' xml:base='https://base.example/'/>",
    "<link>https://x.example/text-link</link>",
    "<author><name>Ann</name></author>",
    "<author><name>Bo</name><email>bo@example.com</email><uri>/bo</uri></author>",
    "<author><name>Gd</name><gd:image rel='x' src='https://x.example/i.gif'/></author>",
    "<dc:creator>Dee</dc:creator>",
    "<published>2026-01-31T09:00:00Z</published>",
    "<updated>2026-02-01T09:30:00-08:00</updated>",
    "<dcterms:created>2019-01-02T03:04:05Z</dcterms:created>",
    "<category term='t'/>",
    "<rights>CC</rights>",
    "<source><title>Elsewhere</title></source>",
    "<thr:in-reply-to ref='urn:p:1' href='https://x.example/p/1'/>",
    "<thr:in-reply-to>https://x.example/p/2</thr:in-reply-to>",
    "<thr:total>5</thr:total>",
    "<media:thumbnail url='https://x.example/t.png'/>",
    "<content type='html' xml:base='https://content.example/'>c</content>",
]
NAMESPACES = (
    'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:dcterms="http://purl.org/dc/terms/" '
    'xmlns:content="http://purl.org/rss/1.0/modules/content/" '
    'xmlns:wfw="http://wellformedweb.org/CommentAPI/" '
    'xmlns:slash="http://purl.org/rss/1.0/modules/slash/" xmlns:media="http://search.yahoo.com/mrss/" '
    'xmlns:thr="http://purl.org/syndication/thread/1.0" xmlns:xhtml="http://www.w3.org/1999/xhtml" '
    'xmlns:gd="http://schemas.google.com/g/2005"'
)
BASES = ["", ' xml:base="https://base.example/dir/"', ' xml:base="sub/"']


def _rss_document(items: list[list[str]], base: str) -> bytes:
    body = "".join(f"<item>{''.join(parts)}</item>" for parts in items)
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"{base} {NAMESPACES} '
        'xmlns:atom="http://www.w3.org/2005/Atom">'
        f"<channel><title>t</title><link>https://x.example/</link>{body}</channel></rss>"
    ).encode()


def _atom_document(entries: list[list[str]], base: str) -> bytes:
    body = "".join(f"<entry>{''.join(parts)}</entry>" for parts in entries)
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><feed xmlns="http://www.w3.org/2005/Atom"{base} {NAMESPACES}>'
        f"<title>t</title><id>urn:f</id><updated>2026-01-01T00:00:00Z</updated>{body}</feed>"
    ).encode()


@settings(
    max_examples=int(os.environ.get("MR_PARITY_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    form=st.sampled_from(["rss", "atom"]),
    data=st.data(),
    base=st.sampled_from(BASES),
    kind=st.sampled_from(["feed", "comments"]),
)
def test_documents_put_together_from_fragments_parse_alike(
    form: str, data: st.DataObject, base: str, kind: str
) -> None:
    parts = RSS_ITEM_PARTS if form == "rss" else ATOM_ENTRY_PARTS
    items = data.draw(st.lists(st.lists(st.sampled_from(parts), max_size=7), min_size=1, max_size=3))
    body = _rss_document(items, base) if form == "rss" else _atom_document(items, base)
    try:
        fast, slow = _both(body, kind)
    except FeedError:
        return  # neither path reads it (feedparser too finds no entry)
    assert fast == slow


def test_most_fragments_alone_take_the_fast_path() -> None:
    """The generated documents above are not all declined: each fragment the fast path models is read."""
    read = [p for p in RSS_ITEM_PARTS if _accepted(_rss_document([["<title>t</title>", p]], ""))]
    assert len(read) >= 24, read
    read = [p for p in ATOM_ENTRY_PARTS if _accepted(_atom_document([[p]], ""))]
    assert len(read) >= 20, read


@settings(max_examples=60, deadline=3000)
@given(n=st.integers(0, 8), seed=st.integers(0, 10_000), form=st.sampled_from(["rss", "atom"]))
def test_generated_feeds_parse_alike(n: int, seed: int, form: str) -> None:
    entries = make_entries(n, prefix=f"g{seed}", seed=seed)
    body = rss(entries) if form == "rss" else atom(entries)
    assert fastfeed.entries(body) is not None
    fast, slow = _both(body)
    assert fast == slow


@pytest.mark.parametrize(
    "body",
    [
        b"<rss version='2.0'><channel><item><title>unclosed</channel></rss>",  # malformed
        b"<rss version='0.91'><channel><item><title>t</title></item></channel></rss>",  # another version
        b"<?xml version='1.0'?><rss version='2.0'><channel><item><title>caf&eacute;</title></item>"
        b"</channel></rss>",
        b'<feed xmlns="http://www.w3.org/2005/Atom"><entry><id>1</id><content type="xhtml">'
        b'<div xmlns="http://www.w3.org/1999/xhtml"><p>x</p></div></content></entry></feed>',
        b"<html><body>not a feed</body></html>",
        # An entity declaration: never expanded here (parse refuses the document).
        b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY a "aaaa">]><rss version="2.0"><channel><item>'
        b"<title>&a;</title></item></channel></rss>",
    ],
)
def test_anything_unusual_goes_to_feedparser(body: bytes) -> None:
    assert fastfeed.entries(body) is None
