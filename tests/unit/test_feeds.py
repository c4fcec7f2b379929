"""Feed normalisation: HTML to text, canonical URLs, and RSS 2.0 / Atom 1.0 / RSS 1.0 into mentions."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.ingest import feeds
from services.ingest.feeds import (
    FeedError,
    FetchResult,
    SourceInfo,
    canonical_url,
    discover_feed_url,
    html_to_text,
    looks_like_html,
    parse,
)
from shared.events import MentionKind, mention_id

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _source(kind: str = "feed", *, influence: int = 2, language: str | None = "en") -> SourceInfo:
    return SourceInfo(
        id="src-1",
        name="Example blog",
        url="https://example.com/feed",
        kind=kind,
        influence=influence,
        language=language,
    )


RSS2 = b"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/"
     xmlns:dc="http://purl.org/dc/elements/1.1/">
<channel><title>Blog</title><link>https://example.com/</link><description>d</description>
<item>
  <title>First &amp; foremost</title>
  <link>https://Example.COM/p/1?utm_source=rss&amp;utm_medium=feed&amp;id=7</link>
  <guid isPermaLink="false">post-1</guid>
  <dc:creator>Ana</dc:creator>
  <pubDate>Mon, 02 Feb 2026 10:30:00 +0100</pubDate>
  <description>Short summary</description>
  <content:encoded><![CDATA[<p>Full <b>text</b> &amp; more</p><script>track()</script>]]></content:encoded>
</item>
<item>
  <title>From the future</title>
  <link>https://example.com/p/2</link>
  <pubDate>Fri, 02 Feb 2099 10:30:00 GMT</pubDate>
  <description>&lt;p&gt;Escaped &lt;em&gt;HTML&lt;/em&gt; summary&lt;/p&gt;</description>
</item>
<item>
  <title>Undated</title>
  <link>https://example.com/p/3?fbclid=XYZ</link>
</item>
</channel></rss>"""

ATOM = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
<title>Atom blog</title><id>urn:example:feed</id><updated>2026-02-03T09:00:00Z</updated>
<entry>
  <title type="html">An &lt;b&gt;Atom&lt;/b&gt; entry</title>
  <id>urn:example:entry:1</id>
  <link rel="alternate" href="https://example.com/a/1"/>
  <author><name>Carla</name></author>
  <published>2026-02-02T09:00:00-05:00</published>
  <updated>2026-02-03T09:00:00Z</updated>
  <summary>The summary</summary>
  <content type="html">&lt;p&gt;The content wins&lt;/p&gt;</content>
</entry>
<entry>
  <title>Only updated</title>
  <id>urn:example:entry:2</id>
  <link href="https://example.com/a/2"/>
  <updated>2026-02-01T23:30:00+01:00</updated>
  <summary type="text">Plain summary</summary>
</entry>
</feed>"""

RSS1 = b"""<?xml version="1.0"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/"
         xmlns:dc="http://purl.org/dc/elements/1.1/">
<channel rdf:about="https://example.com/">
  <title>RDF blog</title><link>https://example.com/</link><description>d</description>
  <items><rdf:Seq><rdf:li resource="https://example.com/r/1"/></rdf:Seq></items>
</channel>
<item rdf:about="https://example.com/r/1">
  <title>An RSS 1.0 item</title>
  <link>https://example.com/r/1?utm_campaign=x</link>
  <description>RDF body</description>
  <dc:creator>Dee</dc:creator>
  <dc:date>2026-01-15T08:00:00+02:00</dc:date>
</item>
</rdf:RDF>"""

COMMENTS = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:thr="http://purl.org/syndication/thread/1.0">
<title>Comments</title><id>urn:example:comments</id><updated>2026-02-03T09:00:00Z</updated>
<entry>
  <title>Re: First</title>
  <id>urn:example:comment:1</id>
  <link href="https://example.com/p/1#comment-1"/>
  <thr:in-reply-to ref="urn:example:entry:1" href="https://example.com/p/1"/>
  <author><name>Eve</name></author>
  <updated>2026-02-03T09:00:00Z</updated>
  <content type="text">Agreed!</content>
</entry>
<entry>
  <title>Re: Second</title>
  <link href="https://example.com/p/2?utm_source=x#comment-7"/>
  <updated>2026-02-03T10:00:00Z</updated>
  <content type="text">No thread element here</content>
</entry>
</feed>"""


# --- html_to_text -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("Caf&eacute; &amp; bar &#8217;n&#x27; more", "Café & bar \u2019n' more"),
        ("<p>Hello&nbsp;world</p>", "Hello world"),
        ("<p>Hi</p><script>alert('x')</script><style>p { color: red }</style>there", "Hi there"),
        ("<div>kept<noscript>dropped</noscript><template>dropped</template></div>", "kept"),
        ("<p>one</p><p>two</p><ul><li>three</li><li>four</li></ul>", "one two three four"),
        ("line<br>break", "line break"),
        ("un<b>believ</b>able", "unbelievable"),
        ("  spaces \n\t and\r\n  newlines  ", "spaces and newlines"),
        ("AT&T is fine", "AT&T is fine"),
        ("", ""),
    ],
)
def test_html_to_text(html: str, text: str) -> None:
    assert html_to_text(html) == text


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("a < b and c > d", "a < b and c > d"),
        ("I <3 feeds", "I <3 feeds"),
        ('<img alt="x>y" src=z>after', "after"),
        ("<script>if (a<b) {}</script>ok", "ok"),
        ("<SCRIPT>x</Script >shown", "shown"),
        ("<script>never closed", ""),
        ("kept<!-- never closed", "kept"),
        ("<![CDATA[dropped]]>kept", "kept"),
        ("<a<a<a", "<a<a<a"),
    ],
)
def test_html_to_text_on_odd_markup(html: str, text: str) -> None:
    assert html_to_text(html) == text


HOSTILE_MARKUP = {
    "unclosed tags": "<a" * 250_000,
    "escaped in a feed": "&lt;a" * 100_000,
    "tags": "<a>" * 170_000,
    "unclosed comments": "<!--" * 125_000,
    "quotes": '<a x="<' * 70_000,
    "scripts": "<script>" * 60_000,
}


@pytest.mark.parametrize("markup", HOSTILE_MARKUP.values(), ids=HOSTILE_MARKUP.keys())
def test_html_to_text_takes_linear_time(markup: str) -> None:
    # html.parser took 11 s for 200 kB of "<a<a<a…", quadratically more for more. Half a megabyte here
    # takes well under a second; the bound is only there to tell "linear" from "stalls".
    started = time.perf_counter()
    html_to_text(markup)
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize(
    ("page", "found"),
    [
        (
            b'<html><head><link rel="alternate" type="application/rss+xml" href="/feed.xml"></head>',
            "/feed.xml",
        ),
        (
            b"<link rel='stylesheet' href='s.css'>"
            b"<LINK REL='Alternate' TYPE='application/atom+xml' HREF=a.xml>",
            "/a.xml",
        ),
        (b'<link rel="alternate" type="application/rss+xml" href="/f?a=1&amp;b=2">', "/f?a=1&b=2"),
        (b'<link rel="alternate" type="text/html" href="/page"><p>no feed</p>', None),
        (b"<link" * 200_000, None),
        (
            b'<link rel="x">' * 100_000 + b'<link rel="alternate" type="application/rss+xml" href="/late">',
            None,
        ),
    ],
    ids=["plain", "case-and-quotes", "entity", "none", "hostile", "too-late"],
)
def test_feed_links_of_an_html_page(page: bytes, found: str | None) -> None:
    started = time.perf_counter()
    url = discover_feed_url(page, "https://blog.example.com/post")
    assert url == (f"https://blog.example.com{found}" if found else None)
    assert time.perf_counter() - started < 1  # it runs on the event loop


@pytest.mark.parametrize(
    ("body", "html"),
    [
        (b"<!DOCTYPE html><html><body>x</body></html>", True),
        (b"  <!-- c --> <html lang=en>", True),
        (b"<!---->" * 40 + b"<html>", True),
        (b"<!---->" * 40 + b"<rss version='2.0'>", False),
        (b"<!--" * 500 + b"x", False),
        (b"<?xml version='1.0'?><rss version='2.0'><channel/></rss>", False),
    ],
)
def test_looks_like_html_without_backtracking(body: bytes, html: bool) -> None:
    # The former regex, `(<!--.*?-->\s*)*`, took 6 s for 25 empty comments and twice as long for each more.
    started = time.perf_counter()
    assert looks_like_html(FetchResult(status=200, body=body, etag=None, last_modified=None)) is html
    assert time.perf_counter() - started < 1


# --- canonical_url ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        ("https://example.com/a?utm_source=x&utm_medium=y&utm_campaign=z", "https://example.com/a"),
        ("https://example.com/a?id=7&fbclid=abc&page=2", "https://example.com/a?id=7&page=2"),
        ("https://example.com/a?gclid=1&UTM_Source=2&q=x", "https://example.com/a?q=x"),
        ("HTTPS://Example.COM/Path/Case", "https://example.com/Path/Case"),
        ("  https://example.com/a  ", "https://example.com/a"),
        ("https://example.com/a?flag=&x=1", "https://example.com/a?flag=&x=1"),
        ("", ""),
    ],
)
def test_canonical_url(url: str, canonical: str) -> None:
    assert canonical_url(url) == canonical


def test_canonical_url_keeps_the_fragment_that_tells_comments_apart() -> None:
    # Comments on one post differ only by their anchor; without a guid it is their identity.
    assert (
        canonical_url("https://example.com/p/1?utm_source=x#comment-3") == "https://example.com/p/1#comment-3"
    )


# --- parse: RSS 2.0 ---------------------------------------------------------------------------


def test_rss2_item_is_normalised() -> None:
    first = parse(RSS2, _source(), now=NOW).mentions[0]
    assert first.id == mention_id("src-1", "post-1")
    assert first.source_id == "src-1"
    assert first.source_name == "Example blog"
    assert first.kind is MentionKind.POST
    assert first.title == "First & foremost"
    assert first.text == "Full text & more"  # content:encoded wins over description; script dropped
    assert first.author == "Ana"
    assert first.url == "https://example.com/p/1?id=7"
    assert first.published_at == datetime(2026, 2, 2, 9, 30, tzinfo=UTC)
    assert first.published_at.utcoffset() is not None
    assert first.in_reply_to is None
    assert first.language_hint == "en"
    assert first.influence == 2


def test_rss2_escaped_html_summary_becomes_text() -> None:
    second = parse(RSS2, _source(), now=NOW).mentions[1]
    assert second.text == "Escaped HTML summary"


def test_a_future_date_falls_back_to_now() -> None:
    assert parse(RSS2, _source(), now=NOW).mentions[1].published_at == NOW


def test_a_missing_date_falls_back_to_now_and_the_link_is_the_identity() -> None:
    third = parse(RSS2, _source(), now=NOW).mentions[2]
    assert third.published_at == NOW
    assert third.url == "https://example.com/p/3"
    assert third.id == mention_id("src-1", "https://example.com/p/3")
    assert third.text == ""


def test_ids_are_deterministic_per_source() -> None:
    again = parse(RSS2, _source(), now=datetime(2027, 1, 1, tzinfo=UTC)).mentions
    assert [m.id for m in again] == [m.id for m in parse(RSS2, _source(), now=NOW).mentions]
    other = SourceInfo(id="src-2", name="x", url="u", kind="feed", influence=1, language=None)
    assert {m.id for m in parse(RSS2, other, now=NOW).mentions}.isdisjoint(m.id for m in again)


@pytest.mark.parametrize(("influence", "expected"), [(0, 1), (3, 3), (9, 3)])
def test_influence_is_clamped(influence: int, expected: int) -> None:
    assert parse(RSS2, _source(influence=influence), now=NOW).mentions[0].influence == expected


def test_entries_without_content_are_dropped() -> None:
    body = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>
    <item><link>https://example.com/empty</link></item>
    <item><guid>kept</guid><title>Kept</title></item>
    </channel></rss>"""
    assert [m.title for m in parse(body, _source(), now=NOW).mentions] == ["Kept"]


NO_IDENTITY = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>
<item><title>Dated</title><description>no link and no guid</description>
  <pubDate>Mon, 02 Feb 2026 10:30:00 +0100</pubDate></item>
<item><description>no title either</description></item>
<item><description>no title either</description></item>
<item><title>By Bo</title><author>bo@example.com (Bo)</author><description>same words</description></item>
<item><title>By Cy</title><author>cy@example.com (Cy)</author><description>same words</description></item>
</channel></rss>"""


@pytest.mark.parametrize("fast", [True, False])
def test_entries_without_guid_or_link_get_a_stable_id_from_their_content(fast: bool) -> None:
    first = parse(NO_IDENTITY, _source(), now=NOW, fast=fast).mentions
    assert [m.text for m in first] == [
        "no link and no guid",
        "no title either",
        "no title either",
        "same words",
        "same words",
    ]
    # The next poll (later, the other parser) finds the same ids: nothing is published twice.
    again = parse(NO_IDENTITY, _source(), now=datetime(2027, 1, 1, tzinfo=UTC), fast=not fast).mentions
    assert [m.id for m in again] == [m.id for m in first]
    # Two identical entries are one mention (ingest keeps one of each id); different authors are two.
    assert len({m.id for m in first}) == 4
    other = SourceInfo(id="src-2", name="x", url="u", kind="feed", influence=1, language=None)
    assert {m.id for m in parse(NO_IDENTITY, other, now=NOW).mentions}.isdisjoint(m.id for m in first)


def test_a_feed_without_items_is_empty_not_an_error() -> None:
    body = b'<?xml version="1.0"?><rss version="2.0"><channel><title>Quiet</title></channel></rss>'
    assert parse(body, _source(), now=NOW).mentions == []


# --- parse: Atom 1.0 and RSS 1.0 --------------------------------------------------------------


def test_atom_entry_is_normalised() -> None:
    first, second = parse(ATOM, _source(language=None), now=NOW).mentions
    assert first.id == mention_id("src-1", "urn:example:entry:1")
    assert first.title == "An Atom entry"
    assert first.text == "The content wins"
    assert first.author == "Carla"
    assert first.url == "https://example.com/a/1"
    assert first.published_at == datetime(2026, 2, 2, 14, 0, tzinfo=UTC)  # published, not updated
    assert first.language_hint in (None, "en")  # no hint on the source: detected, if the text says enough
    assert second.text == "Plain summary"
    assert second.published_at == datetime(2026, 2, 1, 22, 30, tzinfo=UTC)  # updated when unpublished


def test_rss1_item_is_normalised() -> None:
    [item] = parse(RSS1, _source(), now=NOW).mentions
    assert item.title == "An RSS 1.0 item"
    assert item.text == "RDF body"
    assert item.author == "Dee"
    assert item.url == "https://example.com/r/1"
    assert item.published_at == datetime(2026, 1, 15, 6, 0, tzinfo=UTC)


# --- parse: comment sources -------------------------------------------------------------------


def test_comment_sources_give_comments_with_what_they_reply_to() -> None:
    threaded, unthreaded = parse(COMMENTS, _source("comments"), now=NOW).mentions
    assert threaded.kind is MentionKind.COMMENT
    assert threaded.in_reply_to == "https://example.com/p/1"
    assert threaded.id == mention_id("src-1", "urn:example:comment:1")
    # Without thr:in-reply-to, the post is the comment's own link without its anchor.
    assert unthreaded.kind is MentionKind.COMMENT
    assert unthreaded.url == "https://example.com/p/2#comment-7"
    assert unthreaded.in_reply_to == "https://example.com/p/2"


def test_the_same_document_from_a_feed_source_gives_posts() -> None:
    mentions = parse(COMMENTS, _source("feed"), now=NOW).mentions
    assert {m.kind for m in mentions} == {MentionKind.POST}
    assert {m.in_reply_to for m in mentions} == {None}


# --- parse: not a feed ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"not a feed at all",
        b'{"items": []}',
        b"<?xml version='1.0'?><rss><channel><title>broken</channel>",
        b"<html><head><title>Log in</title></head><body><p>Please sign in</p></body></html>",
        b"<?xml version='1.0'?><sitemap><url>https://example.com/</url></sitemap>",
        b"",
    ],
)
def test_a_body_that_is_not_a_feed_raises_feed_error(body: bytes) -> None:
    with pytest.raises(FeedError, match=r"not a (readable )?feed"):
        parse(body, _source(), now=NOW)


def test_entities_are_decoded_once() -> None:
    assert html_to_text("<p>&amp;lt;b&amp;gt; is a tag</p>") == "&lt;b&gt; is a tag"
    assert html_to_text("Fish &amp; chips") == "Fish & chips"


# --- hostile and broken entries ----------------------------------------------------------------------


def _rss(*items: str, namespaces: str = "") -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0" '
        'xmlns:slash="http://purl.org/rss/1.0/modules/slash/" '
        'xmlns:wfw="http://wellformedweb.org/CommentAPI/" '
        f'xmlns:dcterms="http://purl.org/dc/terms/"{namespaces}><channel><title>t</title>{"".join(items)}'
        "</channel></rss>"
    ).encode()


def _created(date: str) -> str:
    return f"<dcterms:created>{date}</dcterms:created>"


GOOD_ITEM = "<item><guid>good</guid><title>Good entry</title><link>https://example.com/good</link></item>"


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize(
    ("item", "skipped"),
    [
        # A link of megabytes would make an event the broker refuses (and fail every poll of the source).
        (
            f"<item><guid>long</guid><title>Long</title><link>https://example.com/{'a' * 9000}</link></item>",
            1,
        ),
        # Dates no datetime can hold: the entry is read, dated when first seen.
        (f"<item><guid>y1</guid><title>Year 10000</title>{_created('9999-12-31T23:59:59-23:59')}</item>", 0),
        (f"<item><guid>y0</guid><title>Year 0</title>{_created('0001-01-01T00:00:00+23:59')}</item>", 0),
    ],
)
def test_one_unreadable_entry_costs_only_itself(item: str, skipped: int, fast: bool) -> None:
    parsed = parse(_rss(GOOD_ITEM, item, GOOD_ITEM.replace("good", "good2")), _source(), now=NOW, fast=fast)
    titles = [m.title for m in parsed.mentions]
    assert titles[0] == "Good entry" and titles[-1] == "Good entry"
    assert len(titles) == 3 - skipped
    assert parsed.skipped == skipped
    if skipped:
        assert parsed.skip_reason and "longer than 8000 characters" in parsed.skip_reason


@pytest.mark.parametrize("fast", [True, False])
def test_a_comment_count_that_is_not_a_number_costs_only_the_count(fast: bool) -> None:
    item = (
        "<item><guid>p</guid><title>Post</title><link>https://example.com/p</link>"
        "<wfw:commentRss>https://example.com/p/feed</wfw:commentRss><slash:comments>{}</slash:comments></item>"
    )
    counts = ["\u00b2", "7", "lots", "9" * 5000, "\u0663"]
    parsed = parse(
        _rss(*(item.replace("/p", f"/p{i}").format(c) for i, c in enumerate(counts))),
        _source(),
        now=NOW,
        fast=fast,
    )
    assert parsed.skipped == 0
    assert [f.count for f in parsed.comment_feeds] == [None, 7, None, None, None]


@pytest.mark.parametrize("fast", [True, False])
def test_a_reply_target_with_text_and_no_attributes_costs_nothing(fast: bool) -> None:
    body = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:thr="http://purl.org/syndication/thread/1.0">
<title>c</title><id>urn:c</id><updated>2026-02-03T09:00:00Z</updated>
<entry><id>urn:c:1</id><title>Re</title><link href="https://example.com/p/1#c-1"/>
  <thr:in-reply-to>https://example.com/p/1</thr:in-reply-to><content>Text-only target</content></entry>
<entry><id>urn:c:2</id><title>Re</title><link href="https://example.com/p/2#c-2"/>
  <thr:in-reply-to ref="urn:p:2" href="https://example.com/p/two"/><content>Attributes</content></entry>
</feed>"""
    first, second = parse(body, _source("comments"), now=NOW, fast=fast).mentions
    assert first.in_reply_to == "https://example.com/p/1"  # from its own link, as without a target
    assert second.in_reply_to == "https://example.com/p/two"


@pytest.mark.parametrize("fast", [True, False])
def test_dates_only_in_dcterms_are_read(fast: bool) -> None:
    body = _rss(
        "<item><guid>m</guid><title>Modified</title><dcterms:modified>2020-03-04T05:06:07Z</dcterms:modified></item>",
        "<item><guid>c</guid><title>Created</title><dcterms:created>2019-01-02T03:04:05Z</dcterms:created></item>",
    )
    modified, created = parse(body, _source(), now=NOW, fast=fast).mentions
    assert modified.published_at == datetime(2020, 3, 4, 5, 6, 7, tzinfo=UTC)
    assert created.published_at == datetime(2019, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize("fast", [True, False])
def test_windows_1252_punctuation_in_a_latin_1_feed_is_punctuation(fast: bool) -> None:
    body = (
        b'<?xml version="1.0" encoding="ISO-8859-1"?><rss version="2.0"><channel><title>t</title>'
        b"<item><guid>1</guid><title>It\x92s \x93quoted\x94 \x96 caf\xe9\x85 done</title></item>"
        b"</channel></rss>"
    )
    assert (
        parse(body, _source(), now=NOW, fast=fast).mentions[0].title
        == "It\u2019s \u201cquoted\u201d \u2013 caf\u00e9\u2026 done"
    )


def test_a_body_that_names_a_local_file_is_not_read_from_disk(tmp_path: Path) -> None:
    # feedparser, given bytes, first tries them as a file name: a server answering "/dev/zero" would
    # have had ingest read this machine's files (or block forever).
    local = tmp_path / "local.xml"
    local.write_bytes(RSS2)
    for fast in (True, False):
        with pytest.raises(FeedError, match="not a"):
            parse(str(local).encode(), _source(), now=NOW, fast=fast)


def test_a_large_document_that_is_not_well_formed_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feeds, "MAX_LENIENT_BYTES", 5_000)
    filler = "".join(f"<item><guid>{i}</guid><title>Entry {i}</title></item>" for i in range(150))
    well_formed = f"<rss version='0.92'><channel><title>t</title>{filler}</channel></rss>".encode()
    assert len(well_formed) > 5_000
    # Over the size, well-formed: feedparser reads it strictly, as ever (the fast path declines 0.92).
    assert len(parse(well_formed, _source(), now=NOW).mentions) == 150
    broken = well_formed.replace(b"<title>Entry 3</title>", b"<title>Entry 3 & 4</title>")
    with pytest.raises(FeedError, match="not well-formed XML and larger than 5000 bytes"):
        parse(broken, _source(), now=NOW)
    # Under the size, the lenient parser still reads what it can.
    monkeypatch.setattr(feeds, "MAX_LENIENT_BYTES", 2_000_000)
    assert len(parse(broken, _source(), now=NOW).mentions) == 150


# --- XML entity declarations ---------------------------------------------------------------------------

ENTITY_FEED = (
    '<?xml version="1.0" encoding="{encoding}"?>\n'
    '<!DOCTYPE rss [{subset}]>\n<rss version="2.0"><channel><title>t</title>'
    "<item><guid>1</guid><title>{reference}</title></item></channel></rss>"
)
ENTITY_SUBSETS = [
    ('<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">', "&b;"),
    ('<!-- a comment with <tags> first --><!ENTITY a "x">', "&a;"),
    ('<!ENTITY x SYSTEM "file:///etc/passwd">', "&x;"),
    ('<!ENTITY % p SYSTEM "http://169.254.169.254/dtd"> %p;', "t"),
]


# (the encoding the declaration names, the codec, the byte-order mark written before the document)
ENCODINGS = {
    "utf-8": ("UTF-8", "utf-8", b""),
    # With a BOM: the bytes hold no "<!ENTITY" an ASCII search finds (the old guard let these through).
    "utf-16-le-bom": ("UTF-16", "utf-16-le", b"\xff\xfe"),
    "utf-16-be-bom": ("UTF-16", "utf-16-be", b"\xfe\xff"),
    "utf-16-le": ("UTF-16LE", "utf-16-le", b""),
    "utf-32": ("UTF-32", "utf-32", b""),  # the codec writes its own BOM
    "latin-1": ("ISO-8859-1", "iso-8859-1", b""),
    "shift-jis": ("Shift_JIS", "shift_jis", b""),
    "ebcdic": ("cp037", "cp037", b""),
}


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize(
    ("subset", "reference"), ENTITY_SUBSETS, ids=["laughs", "after-comment", "external", "parameter"]
)
@pytest.mark.parametrize("encoded", ENCODINGS.values(), ids=ENCODINGS.keys())
def test_entity_declarations_are_refused_in_every_encoding(
    encoded: tuple[str, str, bytes], subset: str, reference: str, fast: bool
) -> None:
    encoding, codec, bom = encoded
    body = bom + ENTITY_FEED.format(encoding=encoding, subset=subset, reference=reference).encode(codec)
    with pytest.raises(FeedError, match="declares XML entities"):
        parse(body, _source(), now=NOW, fast=fast)


XXE_POST = (
    b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title><item><guid>1</guid><title>XXE</title>'
    b"<description>%s</description></item></channel></rss>"
)


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize(
    "body",
    [
        # A security blog quoting the attack, in CDATA and escaped: text, not a declaration.
        XXE_POST % b'<![CDATA[<p>It declares <!ENTITY lol "lol"> ten times.</p>]]>',
        XXE_POST % b'&lt;!ENTITY lol "lol"&gt;',
        # A DOCTYPE that declares no entity (RSS 0.91's own).
        b'<?xml version="1.0"?><!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN" '
        b'"http://my.netscape.com/publish/formats/rss-0.91.dtd"><rss version="0.91"><channel><title>t</title>'
        b"<item><title>XXE</title><link>https://example.com/x</link><description>d</description></item></channel></rss>",
    ],
    ids=["cdata", "escaped", "doctype"],
)
def test_a_feed_that_only_mentions_entities_is_read(body: bytes, fast: bool) -> None:
    assert [m.title for m in parse(body, _source(), now=NOW, fast=fast).mentions] == ["XXE"]


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("encoded", ENCODINGS.values(), ids=ENCODINGS.keys())
def test_a_security_post_quoting_an_entity_declaration_is_read_in_every_encoding(
    encoded: tuple[str, str, bytes], fast: bool
) -> None:
    # The old guard searched the raw bytes for "<!ENTITY" and refused this UTF-8 feed for its CDATA.
    encoding, codec, bom = encoded
    body = bom + (
        f'<?xml version="1.0" encoding="{encoding}"?><rss version="2.0"><channel><title>t</title><item>'
        '<guid>1</guid><title>XXE</title><description><![CDATA[<p>Declare <!ENTITY lol "lol"> '
        "ten times.</p>]]></description></item></channel></rss>"
    ).encode(codec)
    (mention,) = parse(body, _source(), now=NOW, fast=fast).mentions
    assert mention.title == "XXE" and mention.text == "Declare ten times."
