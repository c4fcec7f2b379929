"""Keyword filters on sources."""

from __future__ import annotations

import pytest

from shared.filters import FilterSyntaxError, KeywordFilter

QUERY = '"acme cloud" OR acmecloud -jobs'


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("Acme Cloud was down all morning", True),
        ("the ACME   cloud pricing", True),  # whitespace inside a phrase is folded
        ("acmecloud status page", True),
        ("Acme Cloud jobs: we are hiring", False),
        ("acme clouds over the harbour", False),  # whole words only
        ("acme is a cloud company", False),  # a phrase is a phrase
        ("nothing to see", False),
        ("Acme Cloud, Jobs-Board", False),  # -jobs matches the word jobs
    ],
)
def test_the_example_query(text: str, kept: bool) -> None:
    assert KeywordFilter.parse(QUERY).matches(text) is kept


def test_terms_side_by_side_must_all_match() -> None:
    f = KeywordFilter.parse("tessellate outage")
    assert f.matches("Tessellate had an outage")
    assert not f.matches("Tessellate is fine")


def test_only_exclusions_keep_everything_else() -> None:
    f = KeywordFilter.parse('-"job offer" -hiring')
    assert f.matches("Tessellate 4.0 review")
    assert not f.matches("Tessellate is hiring")
    assert not f.matches("a job offer at Tessellate")


def test_or_chains() -> None:
    f = KeywordFilter.parse("a OR b OR c d")
    assert f.matches("b and d") and f.matches("c d") and not f.matches("a b c")


@pytest.mark.parametrize(
    "query", ["", "   ", "OR", "a OR", "OR a", "a OR OR b", '"unclosed', '""', "a OR -b"]
)
def test_unreadable_queries_are_refused(query: str) -> None:
    with pytest.raises(FilterSyntaxError):
        KeywordFilter.parse(query)


def test_regex_metacharacters_are_literal() -> None:
    f = KeywordFilter.parse("c++ OR .net")
    assert f.matches("we use C++ daily") and not f.matches("we use c daily")
