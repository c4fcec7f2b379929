"""The ElementTree fast path gives exactly what feedparser gives, and steps aside when unsure."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.ingest import fastfeed
from services.ingest.feeds import ParsedFeed, SourceInfo, parse
from shared.settings import REPO_ROOT
from tests.support.factories import atom, make_entries, rss

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
EXAMPLES = sorted((REPO_ROOT / "examples" / "feeds").glob("*.xml"))


def _source(kind: str = "feed") -> SourceInfo:
    return SourceInfo(
        id="src", name="Src", url="https://x.example/feed", kind=kind, influence=2, language=None
    )


def _both(body: bytes, kind: str = "feed") -> tuple[ParsedFeed, ParsedFeed]:
    return parse(body, _source(kind), now=NOW, fast=True), parse(body, _source(kind), now=NOW, fast=False)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: Path(p).name)
@pytest.mark.parametrize("kind", ["feed", "comments"])
def test_the_example_feeds_parse_alike(path: Path, kind: str) -> None:
    fast, slow = _both(path.read_bytes(), kind)
    assert fast == slow
    assert fast.mentions


def test_the_examples_mostly_take_the_fast_path() -> None:
    fast = [p.name for p in EXAMPLES if fastfeed.entries(p.read_bytes()) is not None]
    assert len(fast) >= len(EXAMPLES) - 2, fast


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
        b"<rss version='2.0'><channel><item><title>t</title><pubDate>someday</pubDate></item>"
        b"</channel></rss>",
        b"<html><body>not a feed</body></html>",
    ],
)
def test_anything_unusual_goes_to_feedparser(body: bytes) -> None:
    assert fastfeed.entries(body) is None
