"""The mapping between a Mention and its row: every field has a column, and a round trip is the identity."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.db import MentionRow
from shared.events import Mention, MentionKind
from shared.mentionrows import RENAMED, mention_column_lists, mention_columns, mention_from_row


def test_every_field_of_a_mention_has_a_column_of_the_mentions_table() -> None:
    columns = set(MentionRow.__table__.columns.keys())
    for name in Mention.model_fields:
        assert RENAMED.get(name, name) in columns, f"Mention.{name} has no column"


def test_a_mention_survives_a_round_trip_through_its_row() -> None:
    mention = Mention(
        id="m1",
        source_id="s1",
        source_name="A blog",
        kind=MentionKind.COMMENT,
        url="https://blog.example.org/p#c1",
        title="Re: the update",
        text="It broke my export.",
        author="Grace",
        author_url="https://blog.example.org/grace",
        published_at=datetime(2026, 12, 1, 9, 30, tzinfo=UTC),
        in_reply_to="https://blog.example.org/p",
        language_hint="en",
        influence=3,
        content_hash="ab" * 32,
        near_duplicate_of="m0",
    )
    columns = mention_columns(mention)
    assert columns["kind"] == "comment" and columns["duplicate_of"] == "m0"
    assert mention_from_row(MentionRow(**columns)) == mention


def test_the_column_lists_of_a_batch_are_each_mentions_columns() -> None:
    mentions = [
        Mention(
            id=f"m{i}",
            source_id="s1",
            kind=MentionKind.COMMENT if i % 2 else MentionKind.POST,
            title=f"Title {i}",
            published_at=datetime(2026, 12, 1, 9, i, tzinfo=UTC),
            in_reply_to="https://blog.example.org/p" if i % 2 else None,
            near_duplicate_of="m0" if i == 2 else None,
        )
        for i in range(4)
    ]
    lists = mention_column_lists(mentions)
    assert [{name: values[i] for name, values in lists.items()} for i in range(4)] == [
        mention_columns(m) for m in mentions
    ]
    assert all(type(kind) is str for kind in lists["kind"])
