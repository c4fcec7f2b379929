"""How a mention is made from what a source says, the same for feed entries and pushed posts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from shared.events import Mention, MentionKind, mention_id
from shared.intake import content_hash, new_mention

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def _make(**overrides: Any) -> Mention:
    values: dict[str, Any] = {
        "source_id": "s1",
        "source_name": "A blog",
        "entry_key": "tag:blog.example.org,2026:1",
        "kind": MentionKind.POST,
        "url": "https://blog.example.org/p",
        "title": "The battery dies in two hours",
        "text": "Since the update the battery of my tablet dies in two hours.",
        "author": "Grace",
        "published_at": NOW - timedelta(hours=1),
        "now": NOW,
    }
    values.update(overrides)
    return new_mention(**values)


def test_the_id_comes_from_the_source_and_the_entry_key() -> None:
    assert _make().id == mention_id("s1", "tag:blog.example.org,2026:1")


def test_a_missing_or_future_date_is_the_time_first_seen_and_others_are_utc() -> None:
    assert _make(published_at=None).published_at == NOW
    assert _make(published_at=NOW + timedelta(days=3)).published_at == NOW
    paris = datetime(2026, 12, 7, 10, 0, tzinfo=timezone(timedelta(hours=1)))
    published = _make(published_at=paris).published_at
    assert published == datetime(2026, 12, 7, 9, 0, tzinfo=UTC) and published.tzinfo == UTC


def test_language_hash_and_influence() -> None:
    m = _make(influence=7)
    assert m.language_hint == "en" and m.influence == 3
    assert m.content_hash == content_hash(m.title, m.text)
    assert _make(language="de").language_hint == "de"
