"""Selecting dead letters for `mention-router dlq replay`, and what a replay publishes."""

from __future__ import annotations

import io

import pytest

from services.cli.dlq import _table
from shared.dlq import DeadLetter, select
from shared.errors import ConfigError


def _letter(
    partition: int, offset: int, *, stage: str = "classifier", error_type: str = "PoisonMessage"
) -> DeadLetter:
    headers = (
        ("ce_id", b"m1:mention.ingested"),
        ("ce_type", b"io.mentionrouter.mention.ingested.v1"),
        ("mr_error", b"not a valid MentionIngested"),
        ("mr_error_type", error_type.encode()),
        ("mr_stage", stage.encode()),
        ("mr_original_topic", b"mentions.raw"),
        ("mr_original_partition", b"2"),
        ("mr_original_offset", b"41"),
        ("mr_failed_at_ms", b"1790000000000"),
    )
    return DeadLetter(
        partition=partition, offset=offset, key=f"k{partition}-{offset}", value=b"{}", headers=headers
    )


LETTERS = [_letter(0, 0), _letter(0, 1, stage="router"), _letter(1, 0, error_type="PayloadTooLarge")]


def test_select_by_entry_and_filters() -> None:
    assert select(LETTERS) == LETTERS
    assert select(LETTERS, entries=["0:1"]) == [LETTERS[1]]
    assert select(LETTERS, entries=["1"]) == [LETTERS[1]]  # offset 1 exists in one partition only
    assert select(LETTERS, stage="router") == [LETTERS[1]]
    assert select(LETTERS, error_type="PayloadTooLarge") == [LETTERS[2]]


@pytest.mark.parametrize(
    ("entry", "message"), [("0", "ambiguous"), ("3:9", "no such entry"), ("x:1", "expected PARTITION:OFFSET")]
)
def test_select_refuses_what_it_cannot_pin_down(entry: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        select(LETTERS, entries=[entry])


def test_a_replay_carries_the_original_headers_without_the_error_ones() -> None:
    letter = LETTERS[0]
    assert letter.replay_headers() == {
        "ce_id": "m1:mention.ingested",
        "ce_type": "io.mentionrouter.mention.ingested.v1",
    }
    summary = letter.summary()
    assert summary["entry"] == "0:0" and summary["original_offset"] == 41
    assert summary["failed_at"].startswith("2026-")


def test_the_table_lists_one_line_per_entry() -> None:
    out = io.StringIO()
    _table(LETTERS, out)
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:3] == ["ENTRY", "KEY", "STAGE"]
    assert len(lines) == 4 and "mentions.raw[2]@41" in lines[1]
