"""The taxonomy: validation of its YAML shape and the one-pass term matcher."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shared.classify.taxonomy import Taxonomy
from shared.errors import ConfigError
from shared.settings import REPO_ROOT


def _taxonomy(**topics: dict[str, Any]) -> Taxonomy:
    return Taxonomy.from_dict({"version": 7, "topics": topics})


def _hits(taxonomy: Taxonomy, text: str) -> dict[str, tuple[str, ...]]:
    return {m.topic: m.hits for m in taxonomy.match(text)}


@pytest.fixture(scope="module")
def pricing() -> Taxonomy:
    return _taxonomy(
        pricing={"department": "marketing", "terms": ["pricing", "price", "price increase"]},
        bug={"department": "rnd", "terms": ["bug", "doesn't work", "Stack  Trace"]},
        security={"department": "rnd", "terms": ["security"], "regexes": [r"CVE-\d{4}-\d{4,}"]},
    )


# --- matching ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["repricings went out", "the pricingpage", "Xpricing", "pricing_v2", "price2"]
)
def test_a_term_inside_a_longer_word_does_not_match(pricing: Taxonomy, text: str) -> None:
    assert _hits(pricing, text) == {}


@pytest.mark.parametrize(
    "text",
    [
        "pricing",
        "Pricing is odd",
        "(pricing)",
        "new-pricing",
        "pricing's problem",
        "about pricing.",
        "«pricing»",
    ],
)
def test_a_term_matches_between_non_word_characters(pricing: Taxonomy, text: str) -> None:
    assert _hits(pricing, text) == {"pricing": ("pricing",)}


def test_matching_ignores_case_and_reports_the_normalised_term(pricing: Taxonomy) -> None:
    assert _hits(pricing, "PRICING and Price") == {"pricing": ("pricing", "price")}


def test_the_longest_term_wins_at_the_same_position(pricing: Taxonomy) -> None:
    # "price increase" is consumed whole: "price" is not reported a second time for it.
    assert _hits(pricing, "The price increase hurt") == {"pricing": ("price increase",)}
    assert _hits(pricing, "The price is right") == {"pricing": ("price",)}


def test_phrases_match_across_one_space_and_term_whitespace_is_normalised(pricing: Taxonomy) -> None:
    # "Stack  Trace" in the taxonomy is folded to "stack trace".
    assert _hits(pricing, "here is the stack trace") == {"bug": ("stack trace",)}
    assert _hits(pricing, "it doesn't work") == {"bug": ("doesn't work",)}


def test_hits_are_listed_once_in_order_of_first_appearance(pricing: Taxonomy) -> None:
    assert _hits(pricing, "price, pricing, price, PRICE") == {"pricing": ("price", "pricing")}


def test_regexes_match_and_report_the_matched_text(pricing: Taxonomy) -> None:
    assert _hits(pricing, "see cve-2026-12345 and CVE-2025-0001") == {
        "security": ("cve-2026-12345", "CVE-2025-0001")
    }
    assert _hits(pricing, "CVE-26-1") == {}


def test_one_text_can_hit_several_topics(pricing: Taxonomy) -> None:
    assert _hits(pricing, "A security bug in pricing") == {
        "pricing": ("pricing",),
        "security": ("security",),
        "bug": ("bug",),
    }


def test_a_term_shared_by_two_topics_labels_both() -> None:
    taxonomy = _taxonomy(
        account={"department": "support", "terms": ["2fa"]},
        security={"department": "rnd", "terms": ["2fa", "2fa bypass"]},
    )
    assert _hits(taxonomy, "my 2fa is gone") == {"account": ("2fa",), "security": ("2fa",)}
    # The longer phrase wins, so only the topic that owns it is hit.
    assert _hits(taxonomy, "a 2fa bypass") == {"security": ("2fa bypass",)}


def test_terms_with_regex_metacharacters_are_literal() -> None:
    taxonomy = _taxonomy(lang={"department": "rnd", "terms": ["c++", "a.b"]})
    assert _hits(taxonomy, "written in c++ today") == {"lang": ("c++",)}
    assert _hits(taxonomy, "axb") == {}


def test_numeric_terms_from_yaml_are_matched_as_text() -> None:
    taxonomy = Taxonomy.from_dict({"topics": {"outage": {"department": "rnd", "terms": [502, 503]}}})
    assert _hits(taxonomy, "a 502 again") == {"outage": ("502",)}
    assert _hits(taxonomy, "15023") == {}


def test_empty_text_matches_nothing(pricing: Taxonomy) -> None:
    assert pricing.match("") == []


def test_version_and_topics_are_kept(pricing: Taxonomy) -> None:
    assert pricing.version == "7"
    assert pricing.topics["security"].department == "rnd"
    assert pricing.topics["security"].regexes == (r"CVE-\d{4}-\d{4,}",)


def test_the_shipped_taxonomy_loads_and_is_valid() -> None:
    taxonomy = Taxonomy.from_file(REPO_ROOT / "config" / "taxonomy.yaml")
    assert {"security", "outage", "bug", "pricing", "praise"} <= set(taxonomy.topics)
    assert "CVE-2026-12345" in _hits(taxonomy, "Found CVE-2026-12345 in the widget")["security"]


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [None, [], "topics", {"topics": ["bug"]}, {"version": 1}])
def test_a_document_that_is_not_a_mapping_of_topics_is_refused(data: Any) -> None:
    with pytest.raises(ConfigError, match="expected a mapping with a `topics` mapping"):
        Taxonomy.from_dict(data)


def test_no_topics_is_refused() -> None:
    with pytest.raises(ConfigError, match="defines no topics"):
        Taxonomy.from_dict({"topics": {}})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("rnd", "topic 'leaks': expected a mapping"),
        ({"department": "legal", "terms": ["leak"]}, "topic 'leaks': department 'legal' is not one of"),
        ({"terms": ["leak"]}, "topic 'leaks': department None is not one of"),
        ({"department": "rnd", "regexes": ["CVE-(\\d+"]}, "topic 'leaks': regex 'CVE-\\(.*does not compile"),
        ({"department": "rnd"}, "topic 'leaks': needs at least one term or regex"),
        (
            {"department": "rnd", "terms": [], "regexes": []},
            "topic 'leaks': needs at least one term or regex",
        ),
        ({"department": "rnd", "terms": "leak"}, "topic 'leaks': `terms` must be a list of strings"),
        ({"department": "rnd", "terms": [["leak"]]}, "topic 'leaks': `terms` must be a list of strings"),
        ({"department": "rnd", "regexes": "leak.*"}, "topic 'leaks': `regexes` must be a list of strings"),
        ({"department": "rnd", "terms": ["leak", ""]}, "topic 'leaks': `terms` contains a blank term"),
        ({"department": "rnd", "terms": ["  "]}, "topic 'leaks': `terms` contains a blank term"),
    ],
)
def test_an_invalid_topic_is_refused_with_its_name(spec: Any, message: str) -> None:
    data = {"topics": {"bug": {"department": "rnd", "terms": ["bug"]}, "leaks": spec}}
    with pytest.raises(ConfigError, match=message):
        Taxonomy.from_dict(data, where="taxonomy.yaml")


def test_the_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "taxonomy.yaml"
    path.write_text("topics:\n  bug:\n    department: legal\n    terms: [bug]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{path}: topic 'bug': department 'legal'"):
        Taxonomy.from_file(path)


def test_invalid_yaml_and_a_missing_file_are_config_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("topics: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        Taxonomy.from_file(broken)
    with pytest.raises(ConfigError, match="cannot read taxonomy file"):
        Taxonomy.from_file(tmp_path / "missing.yaml")


def test_a_regex_that_matches_the_empty_string_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"topic 'x'.*matches the empty string"):
        Taxonomy.from_dict({"topics": {"x": {"department": "rnd", "regexes": ["a*"]}}})


def test_match_folds_curly_apostrophes_itself(pricing: Taxonomy) -> None:
    assert _hits(pricing, "it doesn\u2019t work") == {"bug": ("doesn't work",)}
