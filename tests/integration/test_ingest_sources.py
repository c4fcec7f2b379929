"""Ingest's source features against a local feed server, the real broker and the real PostgreSQL:
comment-feed discovery, autodiscovery, redirects, backoff, filters, backfill, near-duplicates, SSRF,
hostile XML, and two replicas polling the same sources."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from xml.sax.saxutils import escape

import pytest
from sqlalchemy import update

from devsupport.factories import Entry, make_entries, rss
from devsupport.feedserver import FeedServer
from devsupport.scenario import wait_for
from devsupport.sources import read_raw, register, sources_by_id
from services.ingest.service import IngestService
from shared.bus.kafka import KafkaBus
from shared.db import SourceRow, create_engine, session_factory
from shared.events import MentionKind
from shared.settings import Settings
from shared.sources import SourceSpec
from tests.conftest import KafkaEnv

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

ARTICLE = (
    "Tessellate closed a forty million dollar Series B led by Northbeam Ventures on Tuesday. The "
    "company plans to double its engineering group in Lisbon and Toronto, invest in the sync engine "
    "behind its whiteboard, and bring offline editing to the tablet apps before the summer, its "
    "founders told reporters at the announcement in Porto. The round values the company at about four "
    "hundred million dollars, according to two people familiar with the deal. Existing investors took "
    "part as well. The money arrives after a difficult spring in which a long outage and a security flaw "
    "in shared links drew complaints from enterprise customers, some of whom paused their renewals. "
    "The chief executive said the company had rebuilt its incident process since then and would publish "
    "a reliability report every quarter. Analysts expect the new funds to sharpen competition with the "
    "larger collaboration suites, which have added whiteboards of their own over the past two years."
)


@pytest.fixture
async def settings(kafka: KafkaEnv, pg_url: str) -> Settings:
    return kafka.settings(database_url=pg_url, ingest_allowed_networks="127.0.0.1")


@pytest.fixture
async def bus(settings: Settings) -> AsyncIterator[KafkaBus]:
    bus = KafkaBus(settings)
    await bus.start()
    await bus.ensure_topics([settings.topic_raw])
    yield bus
    await bus.stop()


@pytest.fixture
async def ingest(settings: Settings, bus: KafkaBus) -> AsyncIterator[IngestService]:
    engine = create_engine(settings.database_url)
    yield IngestService(settings=settings, bus=bus, sessions=session_factory(engine), owner="replica-a")
    await engine.dispose()


def _rss_items(items: list[str], title: str = "Blog") -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0" '
        'xmlns:wfw="http://wellformedweb.org/CommentAPI/" '
        'xmlns:slash="http://purl.org/rss/1.0/modules/slash/" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f"<channel><title>{title}</title><link>https://blog.example.net/</link><description>d</description>"
        + "".join(items)
        + "</channel></rss>"
    ).encode()


def _item(guid: str, title: str, text: str, link: str, extra: str = "", date: str = "") -> str:
    date = date or "Mon, 02 Nov 2026 10:00:00 +0000"
    return (
        f"<item><guid>{guid}</guid><title>{escape(title)}</title><link>{link}</link>"
        f"<pubDate>{date}</pubDate><description>{escape(text)}</description>{extra}</item>"
    )


async def test_per_post_comment_feeds_are_discovered_and_their_comments_answer_the_post(
    settings: Settings, ingest: IngestService, server: FeedServer
) -> None:
    comments_url = server.url("/post-1/feed/")
    post_link = "https://blog.example.net/post-1"
    server.serve(
        "/blog.xml",
        _rss_items(
            [
                _item(
                    "p1",
                    "Tessellate 4.0 review",
                    "A long look at Tessellate Boards 4.0.",
                    post_link,
                    extra=f"<wfw:commentRss>{comments_url}</wfw:commentRss><slash:comments>2</slash:comments>",
                ),
                _item(
                    "p2",
                    "Tessellate and the quiet week",
                    "Nothing new this week.",
                    "https://blog.example.net/post-2",
                    extra="<wfw:commentRss>" + server.url("/post-2/feed/") + "</wfw:commentRss>"
                    "<slash:comments>0</slash:comments>",
                ),
            ]
        ),
    )
    server.serve(
        "/post-1/feed/",
        _rss_items(
            [
                _item("c1", "By: Ana", "How do I export a board?", f"{post_link}#comment-1"),
                _item("c2", "By: Ben", "Great review, thanks.", f"{post_link}#comment-2"),
            ],
            title="Comments on: Tessellate 4.0 review",
        ),
    )
    blog_id = await register(settings, SourceSpec(name="Blog", url=server.url("/blog.xml"), influence=3))

    assert await ingest.poll_all() == 2  # the two posts; the comment feed is registered
    children = [s for s in (await sources_by_id(settings)).values() if s.parent_id == blog_id]
    assert [(c.url, c.kind, c.post_url, c.influence) for c in children] == [
        (comments_url, "comments", post_link, 3)
    ], "the post with no comments gets no comment feed"

    assert await ingest.poll_all() == 2  # now the comment feed is polled too
    comments = [e.mention for e in await read_raw(settings) if e.mention.kind is MentionKind.COMMENT]
    assert sorted(c.text for c in comments) == ["Great review, thanks.", "How do I export a board?"]
    assert {c.in_reply_to for c in comments} == {post_link}
    assert {c.source_id for c in comments} == {children[0].id}


async def test_atom_replies_links_are_discovered(
    settings: Settings, ingest: IngestService, server: FeedServer
) -> None:
    replies = server.url("/ideas/1/replies.atom")
    server.serve(
        "/ideas.atom",
        (
            '<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom" '
            'xmlns:thr="http://purl.org/syndication/thread/1.0"><title>Ideas</title><id>urn:ideas</id>'
            "<updated>2026-11-01T00:00:00Z</updated><entry><id>urn:idea:1</id>"
            "<title>Dark mode for Tessellate</title>"
            '<link rel="alternate" href="https://ideas.example.net/1"/>'
            f'<link rel="replies" type="application/atom+xml" href="{replies}" thr:count="3"/>'
            "<updated>2026-11-01T00:00:00Z</updated><content>Please add dark mode.</content></entry></feed>"
        ).encode(),
        content_type="application/atom+xml",
    )
    ideas_id = await register(settings, SourceSpec(name="Ideas", url=server.url("/ideas.atom")))
    await ingest.poll_all()
    children = [s for s in (await sources_by_id(settings)).values() if s.parent_id == ideas_id]
    assert [(c.url, c.post_url) for c in children] == [(replies, "https://ideas.example.net/1")]


async def test_an_html_page_leads_to_its_feed_and_the_source_keeps_the_feed_url(
    settings: Settings, ingest: IngestService, server: FeedServer
) -> None:
    feed_url = server.serve("/feed.xml", rss(make_entries(4, prefix="auto")))
    page = server.serve(
        "/",
        b'<!doctype html><html><head><title>Blog</title><link rel="alternate" type="application/rss+xml" '
        b'href="/feed.xml"></head><body>Hello</body></html>',
        content_type="text/html; charset=utf-8",
    )
    source_id = await register(settings, SourceSpec(name="Blog", url=page))
    assert await ingest.poll_all() == 4
    assert (await sources_by_id(settings))[source_id].url == feed_url


async def test_permanent_redirects_update_the_url_and_temporary_ones_do_not(
    settings: Settings, ingest: IngestService, server: FeedServer
) -> None:
    new = server.serve("/new.xml", rss(make_entries(3, prefix="moved")))
    server.serve("/old.xml", b"", status=301, headers={"Location": new})
    tmp = server.serve("/tmp.xml", rss(make_entries(2, prefix="tmp")))
    server.serve("/away.xml", b"", status=302, headers={"Location": tmp})
    moved_id = await register(settings, SourceSpec(name="moved", url=server.url("/old.xml")))
    away_id = await register(settings, SourceSpec(name="away", url=server.url("/away.xml")))
    assert await ingest.poll_all() == 5
    sources = await sources_by_id(settings)
    assert sources[moved_id].url == new
    assert sources[away_id].url == server.url("/away.xml")


async def test_429_and_503_back_off_and_honour_retry_after(
    settings: Settings, ingest: IngestService, server: FeedServer
) -> None:
    server.serve("/busy.xml", b"slow down", status=429, headers={"Retry-After": "7200"})
    server.serve("/down.xml", b"down", status=503)
    busy = await register(settings, SourceSpec(name="busy", url=server.url("/busy.xml"), poll_interval_s=60))
    down = await register(settings, SourceSpec(name="down", url=server.url("/down.xml"), poll_interval_s=60))
    before = datetime.now(UTC)
    await ingest.poll_all()
    sources = await sources_by_id(settings)
    assert sources[busy].last_status == 429 and "HTTP 429" in (sources[busy].last_error or "")
    busy_next = sources[busy].next_poll_at
    down_next = sources[down].next_poll_at
    assert busy_next is not None and down_next is not None
    assert busy_next >= before + timedelta(seconds=7200), "Retry-After is honoured"
    first_delay = (down_next - before).total_seconds()
    assert 110 <= first_delay <= 130, "first failure: twice the poll interval"
    await ingest.poll_all()
    sources = await sources_by_id(settings)
    second_next = sources[down].next_poll_at
    assert second_next is not None
    assert sources[down].consecutive_failures == 2
    assert (second_next - datetime.now(UTC)).total_seconds() >= 230, "second failure: four times"
    # And a scheduled run does not poll them before then.
    assert await ingest._claim(limit=None) == []


async def test_keyword_filter_and_backfill_policy(
    settings: Settings, ingest: IngestService, server: FeedServer
) -> None:
    items = [
        _item("1", "Acme Cloud outage", "acme cloud was down", "https://n.example/1"),
        _item("2", "acmecloud pricing", "the new plans", "https://n.example/2"),
        _item("3", "Acme Cloud jobs", "we are hiring, see jobs page", "https://n.example/3"),
        _item("4", "Weather", "sunny all week", "https://n.example/4"),
        _item("5", "Acme cloudy", "acme cloudy sky, not the product", "https://n.example/5"),
    ]
    filtered = await register(
        settings,
        SourceSpec(
            name="filtered",
            url=server.serve("/f.xml", _rss_items(items)),
            filter_query='"acme cloud" OR acmecloud -jobs',
        ),
    )
    old = "Mon, 02 Nov 2020 10:00:00 +0000"
    recent = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
    backfill_items = [
        _item("old", "Old Tessellate post", "from years ago", "https://b.example/old", date=old),
        _item("new", "New Tessellate post", "from today", "https://b.example/new", date=recent),
    ]
    await asyncio.sleep(0.01)
    only_new = await register(
        settings,
        SourceSpec(name="new only", url=server.serve("/b.xml", _rss_items(backfill_items)), backfill="new"),
    )
    # Backdate the source's creation a little so that "today" is after it.
    engine = create_engine(settings.database_url)
    async with session_factory(engine)() as session, session.begin():
        await session.execute(
            update(SourceRow)
            .where(SourceRow.id == only_new)
            .values(created_at=datetime.now(UTC) - timedelta(hours=1))
        )
    await engine.dispose()
    await ingest.poll_all()
    published = await read_raw(settings)
    assert sorted(e.mention.title for e in published if e.mention.source_id == filtered) == [
        "Acme Cloud outage",
        "acmecloud pricing",
    ]
    assert [e.mention.title for e in published if e.mention.source_id == only_new] == ["New Tessellate post"]


async def test_a_syndicated_copy_is_linked_to_its_original(
    settings: Settings, ingest: IngestService, server: FeedServer
) -> None:
    server.serve(
        "/origin.xml",
        _rss_items([_item("a1", "Tessellate raises Series B", ARTICLE, "https://origin.example/a1")]),
    )
    copy = "Republished with permission from The Stackline. " + ARTICLE + " Read more on our site."
    server.serve(
        "/mirror.xml",
        _rss_items([_item("m1", "Tessellate raises a Series B", copy, "https://mirror.example/m1")]),
    )
    origin = await register(settings, SourceSpec(name="origin", url=server.url("/origin.xml")))
    assert await ingest.poll_all() == 1
    await register(settings, SourceSpec(name="mirror", url=server.url("/mirror.xml")))
    assert await ingest.poll_all() == 1
    published = {e.mention.source_id: e.mention for e in await read_raw(settings)}
    original = published[origin]
    mirror = next(m for sid, m in published.items() if sid != origin)
    assert original.near_duplicate_of is None
    assert mirror.near_duplicate_of == original.id
    assert mirror.content_hash != original.content_hash


async def test_ssrf_private_and_loopback_addresses_are_refused_at_connect_time(
    settings: Settings, bus: KafkaBus, server: FeedServer
) -> None:
    # The same feed server, but an ingest without the loopback allowance (as in production).
    strict = settings.model_copy(update={"ingest_allowed_networks": ""})
    engine = create_engine(settings.database_url)
    guarded = IngestService(settings=strict, bus=bus, sessions=session_factory(engine))
    try:
        source = await register(
            settings, SourceSpec(name="sneaky", url=server.serve("/x.xml", rss(make_entries(2, prefix="x"))))
        )
        localhost = await register(
            settings, SourceSpec(name="by name", url=f"http://localhost:{server.port}/x.xml")
        )
        assert await guarded.poll_all() == 0
        health = await sources_by_id(settings)
        for sid in (source, localhost):
            assert "a loopback address; refused" in (health[sid].last_error or ""), health[sid].last_error
        assert server.requests == {}, "nothing was sent to the refused address"
    finally:
        await engine.dispose()


async def test_hostile_xml_is_refused_with_a_clear_error(
    settings: Settings, ingest: IngestService, server: FeedServer
) -> None:
    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
        b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
        b'<rss version="2.0"><channel><title>&lol3;</title><item><title>&lol3;</title></item></channel></rss>'
    )
    xxe = (
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        b'<rss version="2.0"><channel><title>t</title><item><title>&xxe;</title><guid>1</guid></item>'
        b"</channel></rss>"
    )
    a = await register(settings, SourceSpec(name="laughs", url=server.serve("/laughs.xml", laughs)))
    b = await register(settings, SourceSpec(name="xxe", url=server.serve("/xxe.xml", xxe)))
    good = await register(
        settings,
        SourceSpec(name="good", url=server.serve("/good.xml", rss(make_entries(3, prefix="g")), gzip=True)),
    )
    assert await ingest.poll_all() == 3, (
        "the gzip-encoded good feed is read; the hostile ones publish nothing"
    )
    health = await sources_by_id(settings)
    for sid in (a, b):
        assert "declares XML entities" in (health[sid].last_error or "")
    assert health[good].last_error is None


async def test_two_replicas_publish_each_entry_once(
    settings: Settings, bus: KafkaBus, server: FeedServer
) -> None:
    feeds: list[list[Entry]] = []
    for i in range(12):
        entries = make_entries(25, prefix=f"r{i}", seed=i)
        feeds.append(entries)
        await register(
            settings,
            SourceSpec(
                name=f"feed {i}",
                url=server.serve(f"/r{i}.xml", rss(entries), conditional=False),
                poll_interval_s=1,
            ),
        )
    engine = create_engine(settings.database_url)
    fast = settings.model_copy(update={"ingest_sources_refresh_s": 0.2})
    replicas = [
        IngestService(settings=fast, bus=bus, sessions=session_factory(engine), owner=f"replica-{n}")
        for n in "ab"
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(r.run(stop)) for r in replicas]
    try:

        async def polled_three_times() -> bool:
            sources = await sources_by_id(settings)
            return sum(server.requests.get(f"/r{i}.xml", 0) for i in range(12)) >= 36 and all(
                s.last_success_at for s in sources.values()
            )

        await wait_for(polled_three_times, within=60, what="every feed to be polled three times")
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await engine.dispose()
    published = await read_raw(settings)
    ids = [e.mention.id for e in published]
    assert len(ids) == len(set(ids)) == 12 * 25
