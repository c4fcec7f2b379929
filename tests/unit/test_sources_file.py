"""Bulk source setup from YAML (`mention-router sources import`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.errors import ConfigError
from shared.settings import REPO_ROOT
from shared.sources import load_sources_file


def test_the_bundled_examples_load() -> None:
    specs = load_sources_file(REPO_ROOT / "examples" / "sources.yaml")
    assert len(specs) >= 5
    assert all(s.url.startswith("file://") for s in specs), "relative paths become file:// URLs"
    assert {s.kind for s in specs} == {"feed", "comments"}


def test_all_the_options(tmp_path: Path) -> None:
    path = tmp_path / "sources.yaml"
    path.write_text(
        "sources:\n"
        "  - name: News\n"
        "    url: https://news.example.com/feed\n"
        "    influence: 3\n"
        "    poll_interval_seconds: 600\n"
        "    language: de\n"
        "    backfill: new\n"
        "    filter: '\"acme cloud\" OR acmecloud -jobs'\n"
        "    enabled: false\n"
    )
    [spec] = load_sources_file(path)
    assert (spec.url, spec.influence, spec.poll_interval_s, spec.language) == (
        "https://news.example.com/feed",
        3,
        600,
        "de",
    )
    assert spec.backfill == "new" and spec.filter_query == '"acme cloud" OR acmecloud -jobs'
    assert spec.enabled is False


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{name: x}", "needs at least `name` and `url`"),
        ("{name: x, url: 'https://a.example/f', kind: podcast}", "kind 'podcast'"),
        ("{name: x, url: 'https://a.example/f', influence: 7}", "influence must be 1, 2 or 3"),
        ("{name: x, url: 'https://a.example/f', backfill: some}", "backfill 'some'"),
        ("{name: x, url: 'https://a.example/f', filter: 'a OR'}", "OR needs a term on each side"),
        ("{name: x, url: 'https://a.example/f', poll_interval_seconds: 0}", "poll_interval_seconds"),
    ],
)
def test_mistakes_name_the_source(tmp_path: Path, entry: str, message: str) -> None:
    path = tmp_path / "sources.yaml"
    path.write_text(f"sources:\n  - {entry}\n")
    with pytest.raises(ConfigError, match=r"source #1") as info:
        load_sources_file(path)
    assert message in str(info.value)


def test_not_yaml_or_not_a_list(tmp_path: Path) -> None:
    path = tmp_path / "sources.yaml"
    path.write_text("sources: [unclosed")
    with pytest.raises(ConfigError, match="cannot read sources file"):
        load_sources_file(path)
    path.write_text("sources: 3")
    with pytest.raises(ConfigError, match="`sources` list"):
        load_sources_file(path)
