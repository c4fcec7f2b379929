"""An entry of megabytes becomes a mention cut to the push API's limits, so that its event fits the broker
and the stages (a refused event would fail every poll of its source)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from devsupport.factories import make_entries, rss
from services.ingest.feeds import MAX_TEXT_CHARS, MAX_TITLE_CHARS, parse
from services.ingest.service import source_info
from shared.db import SourceRow
from shared.events import MentionIngested
from shared.stage import MAX_RECORD_BYTES


def test_a_huge_entry_is_cut_to_an_event_that_fits() -> None:
    now = datetime(2026, 11, 26, tzinfo=UTC)
    entries = make_entries(3, prefix="huge")
    entries[1] = dataclasses.replace(entries[1], text="Tessellate crashed again. " * 80_000)
    row = SourceRow(
        id="src-huge",
        name="Huge",
        url="https://huge.example/feed",
        kind="feed",
        enabled=True,
        poll_interval_s=300,
        influence=1,
        created_at=now,
        updated_at=now,
        consecutive_failures=0,
        items_seen=0,
        backfill="all",
    )
    parsed = parse(rss(entries), source_info(row), now=now)
    assert len(parsed.mentions) == 3
    huge = parsed.mentions[1]
    assert len(huge.text) <= MAX_TEXT_CHARS and huge.text.endswith("again.…")
    assert len(huge.title) <= MAX_TITLE_CHARS
    assert len(MentionIngested(mention=huge).model_dump_json()) < MAX_RECORD_BYTES
    assert parsed.mentions[0].text == entries[0].text  # the others untouched
