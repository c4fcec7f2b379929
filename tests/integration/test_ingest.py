"""Ingest against a local feed server, a real broker and a real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.ingest.service import IngestService
from shared.bus.kafka import KafkaBus
from shared.db import create_engine, session_factory
from shared.events import MentionKind, mention_id
from shared.settings import Settings
from shared.sources import SourceSpec
from tests.conftest import KafkaEnv
from tests.support.factories import atom, make_entries, rss
from tests.support.feedserver import FeedServer
from tests.support.sources import read_raw, register, sources_by_id

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


@pytest.fixture
async def settings(kafka: KafkaEnv, pg_url: str) -> Settings:
    # The feed server is on loopback, which the SSRF guard refuses unless the operator allows it.
    return kafka.settings(
        database_url=pg_url, ingest_max_feed_bytes=200_000, ingest_allowed_networks="127.0.0.1"
    )


@pytest.fixture
async def ingest(settings: Settings) -> AsyncIterator[IngestService]:
    bus = KafkaBus(settings)
    await bus.start()
    await bus.ensure_topics([settings.topic_raw])
    engine = create_engine(settings.database_url)
    try:
        yield IngestService(settings=settings, bus=bus, sessions=session_factory(engine))
    finally:
        await bus.stop()
        await engine.dispose()


async def _add(settings: Settings, url: str, *, kind: str = "feed", name: str | None = None) -> str:
    return await register(settings, SourceSpec(name=name or url, url=url, kind=kind, influence=2))


async def test_rss_atom_and_comment_feeds_publish_each_entry_once(
    settings: Settings, ingest: IngestService, server: FeedServer
) -> None:
    blog = make_entries(20, prefix="blog")
    news = make_entries(15, prefix="news")
    comments = make_entries(10, prefix="comments")
    blog_id = await _add(settings, server.serve("/blog.xml", rss(blog)))
    news_id = await _add(settings, server.serve("/news.xml", atom(news), content_type="application/atom+xml"))
    comments_id = await _add(settings, server.serve("/comments.xml", rss(comments)), kind="comments")

    assert await ingest.poll_all() == 45
    published = await read_raw(settings)
    assert len(published) == 45
    ids = {e.mention.id for e in published}
    assert ids == (
        {mention_id(blog_id, e.guid) for e in blog}
        | {mention_id(news_id, e.guid) for e in news}
        | {mention_id(comments_id, e.guid) for e in comments}
    )
    first = next(e.mention for e in published if e.mention.id == mention_id(blog_id, blog[0].guid))
    assert first.title == blog[0].title
    assert first.text == blog[0].text, "HTML is turned into clean text"
    assert "utm_" not in first.url, "tracking parameters are removed"
    assert first.published_at == blog[0].published
    assert first.influence == 2
    kinds = {e.mention.source_id: e.mention.kind for e in published}
    assert kinds[comments_id] is MentionKind.COMMENT and kinds[blog_id] is MentionKind.POST
    reply = next(e.mention for e in published if e.mention.source_id == comments_id)
    assert reply.in_reply_to == reply.url.split("#")[0], "a comment points at the post it answers"

    # Polled again: 304s for conditional feeds, and nothing published twice in any case.
    assert await ingest.poll_all() == 0
    assert sum(server.not_modified.values()) == 3, "the conditional feeds answered 304"
    assert len(await read_raw(settings)) == 45
    # A restarted ingest (a new process: nothing in memory) publishes nothing either.
    engine = create_engine(settings.database_url)
    restarted = IngestService(settings=settings, bus=ingest._bus, sessions=session_factory(engine))
    server.routes["/blog.xml"].conditional = False  # and no 304 to hide behind
    assert await restarted.poll_all() == 0
    await engine.dispose()
    assert len(await read_raw(settings)) == 45
    health = await sources_by_id(settings)
    assert {s.items_seen for s in health.values()} == {20, 15, 10}
    assert all(s.last_error is None and s.consecutive_failures == 0 for s in health.values())


async def test_a_feed_that_changes_publishes_only_the_new_entries(
    settings: Settings, ingest: IngestService, server: FeedServer
) -> None:
    entries = make_entries(30, prefix="grow")
    url = server.serve("/grow.xml", rss(entries[:20]))
    await _add(settings, url)
    assert await ingest.poll_all() == 20
    # The feed slides: the 10 oldest drop out, 10 new ones arrive.
    server.serve("/grow.xml", rss(entries[10:30]))
    assert await ingest.poll_all() == 10
    assert len(await read_raw(settings)) == 30


async def test_bad_feeds_are_reported_in_source_health_and_the_others_go_on(
    settings: Settings, ingest: IngestService, server: FeedServer
) -> None:
    good_id = await _add(settings, server.serve("/good.xml", rss(make_entries(5, prefix="good"))))
    broken_id = await _add(settings, server.serve("/broken.xml", b"<html><body>not a feed at all"))
    truncated_id = await _add(
        settings, server.serve("/truncated.xml", rss(make_entries(5, prefix="t"))[:-300])
    )
    error_id = await _add(settings, server.serve("/error.xml", b"oops", status=500))
    huge_id = await _add(settings, server.serve("/huge.xml", rss(make_entries(400, prefix="huge"))))
    missing_id = await _add(settings, server.url("/missing.xml"))

    published = await ingest.poll_all()
    health = await sources_by_id(settings)
    assert health[good_id].last_error is None and health[good_id].items_seen == 5
    assert "is an HTML page that announces no RSS or Atom feed" in (health[broken_id].last_error or "")
    assert "HTTP 500" in (health[error_id].last_error or "")
    assert "larger than 200000 bytes" in (health[huge_id].last_error or "")
    assert "HTTP 404" in (health[missing_id].last_error or "")
    for sid in (broken_id, error_id, huge_id, missing_id):
        assert health[sid].consecutive_failures == 1
        assert health[sid].items_seen == 0
    # A truncated feed still yields the entries that were complete (feedparser recovers them).
    truncated = health[truncated_id]
    assert truncated.last_error is None or truncated.items_seen == 0
    assert published == 5 + truncated.items_seen

    await ingest.poll_all()
    assert (await sources_by_id(settings))[error_id].consecutive_failures == 2
