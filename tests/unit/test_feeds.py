"""Feed normalisation: HTML to text, canonical URLs, and RSS 2.0 / Atom 1.0 / RSS 1.0 into mentions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.ingest.feeds import FeedError, SourceInfo, canonical_url, html_to_text, parse
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


def test_entries_without_identity_or_content_are_dropped() -> None:
    body = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>
    <item><description>no link and no guid</description></item>
    <item><link>https://example.com/empty</link></item>
    <item><guid>kept</guid><title>Kept</title></item>
    </channel></rss>"""
    assert [m.title for m in parse(body, _source(), now=NOW).mentions] == ["Kept"]


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
