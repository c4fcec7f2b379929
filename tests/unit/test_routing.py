"""Routing rules: the shipped defaults, how matches combine, and validation."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared.classify import Taxonomy
from shared.errors import ConfigError
from shared.events import Classification, Mention, MentionKind, Sentiment, TopicLabel
from shared.routing import Decision, RuleSet
from shared.settings import REPO_ROOT


def _mention(*, influence: int = 1, kind: MentionKind = MentionKind.POST) -> Mention:
    return Mention(
        id="m1", source_id="s1", kind=kind, influence=influence, published_at=datetime(2026, 1, 1, tzinfo=UTC)
    )


def _classification(
    *topics: str, sentiment: Sentiment = Sentiment.NEUTRAL, score: float = 0.0
) -> Classification:
    return Classification(
        sentiment=sentiment,
        sentiment_score=score,
        sentiment_confidence=0.5,
        topics=[TopicLabel(name=t, confidence=0.55) for t in topics],
        engine="test",
        engine_version="0",
    )


def _route(
    rules: RuleSet,
    *topics: str,
    sentiment: Sentiment = Sentiment.NEUTRAL,
    score: float = 0.0,
    influence: int = 1,
    kind: MentionKind = MentionKind.POST,
) -> Decision:
    return rules.evaluate(
        _mention(influence=influence, kind=kind), _classification(*topics, sentiment=sentiment, score=score)
    )


def _summary(decision: Decision) -> list[tuple[str, str, int]]:
    return [(a.department.value, a.priority.value, a.sla_minutes) for a in decision.assignments]


@pytest.fixture(scope="module")
def known_topics() -> list[str]:
    """The topics of the shipped taxonomy: the shipped rules must name no other."""
    return sorted(Taxonomy.from_file(REPO_ROOT / "config" / "taxonomy.yaml").topics)


@pytest.fixture(scope="module")
def defaults(known_topics: list[str]) -> RuleSet:
    return RuleSet.from_file(REPO_ROOT / "config" / "routing.yaml", known_topics=known_topics)


def _rules(*rules: dict[str, Any], fallback: dict[str, Any] | None = None) -> RuleSet:
    return RuleSet.from_dict(
        {
            "fallback": fallback or {"department": "marketing", "priority": "P4", "sla_minutes": 2880},
            "rules": list(rules),
        }
    )


# --- the shipped rules ------------------------------------------------------------------------


def test_security_goes_to_rnd_at_p1_and_to_pr(defaults: RuleSet) -> None:
    decision = _route(defaults, "security")
    assert _summary(decision) == [("rnd", "P1", 60), ("pr", "P2", 240)]
    assert decision.matched_rules == ("security-to-rnd-and-pr",)


def test_an_outage_goes_to_rnd_and_support(defaults: RuleSet) -> None:
    assert {d for d, _, _ in _summary(_route(defaults, "outage"))} == {"rnd", "support"}


@pytest.mark.parametrize(
    ("topic", "department"),
    [
        ("how_to", "support"),
        ("account", "support"),
        ("order", "support"),
        ("feature_request", "product"),
        ("usability", "product"),
        ("praise", "marketing"),
        ("competitor", "marketing"),
        ("pricing", "marketing"),
        ("partnership", "marketing"),
        ("press", "pr"),
        ("crisis", "pr"),
        ("hiring", "pr"),
        ("bug", "rnd"),
    ],
)
def test_each_topic_reaches_its_department(defaults: RuleSet, topic: str, department: str) -> None:
    decision = _route(defaults, topic)
    assert decision.departments == [department]
    assert "fallback" not in decision.matched_rules


def test_a_negative_mention_from_an_influential_source_goes_to_pr_at_p1(defaults: RuleSet) -> None:
    decision = _route(defaults, sentiment=Sentiment.NEGATIVE, score=-0.6, influence=3)
    assert _summary(decision) == [("pr", "P1", 120)]
    assert decision.matched_rules == ("negative-from-influential-source",)


@pytest.mark.parametrize(
    ("sentiment", "influence"), [(Sentiment.NEGATIVE, 2), (Sentiment.NEUTRAL, 3), (Sentiment.POSITIVE, 3)]
)
def test_only_negative_and_influential_together_reach_pr(
    defaults: RuleSet, sentiment: Sentiment, influence: int
) -> None:
    decision = _route(defaults, sentiment=sentiment, influence=influence)
    assert _summary(decision) == [("marketing", "P4", 2880)]
    assert decision.matched_rules == ("fallback",)


def test_the_most_urgent_target_wins_when_two_rules_pick_one_department(defaults: RuleSet) -> None:
    # security gives pr P2/240, the influential-negative rule gives pr P1/120: P1 wins, both are named.
    decision = _route(defaults, "security", sentiment=Sentiment.NEGATIVE, score=-0.8, influence=3)
    assert _summary(decision) == [("rnd", "P1", 60), ("pr", "P1", 120)]
    pr = decision.assignments[1]
    assert pr.rules == ["security-to-rnd-and-pr", "negative-from-influential-source"]


def test_fan_out_puts_the_primary_department_first(defaults: RuleSet) -> None:
    # "customer-problem-to-support" (P2) is primary although "product-feedback" (P3) picks product too.
    decision = _route(defaults, "feature_request", "how_to")
    assert _summary(decision) == [("support", "P2", 240), ("product", "P3", 2880)]


def test_nothing_matched_goes_to_the_fallback(defaults: RuleSet) -> None:
    decision = _route(defaults)
    assert _summary(decision) == [("marketing", "P4", 2880)]
    assert decision.assignments[0].rules == ["fallback"]


# --- combining matches ------------------------------------------------------------------------


def test_a_less_urgent_later_target_does_not_replace_an_earlier_one() -> None:
    rules = _rules(
        {"name": "first", "when": {"topics_any": ["a"]}, "route": [{"department": "rnd", "priority": "P2"}]},
        {"name": "second", "when": {"topics_any": ["a"]}, "route": [{"department": "rnd", "priority": "P3"}]},
    )
    decision = _route(rules, "a")
    assert _summary(decision) == [("rnd", "P2", 1440)]
    assert decision.assignments[0].rules == ["first", "second"]


def test_at_the_same_priority_the_shorter_sla_wins() -> None:
    rules = _rules(
        {"name": "slow", "route": [{"department": "rnd", "priority": "P2", "sla_minutes": 240}]},
        {"name": "fast", "route": [{"department": "rnd", "priority": "P2", "sla_minutes": 30}]},
    )
    assert _summary(_route(rules)) == [("rnd", "P2", 30)]


def test_primary_is_the_highest_priority_then_the_earliest_rule() -> None:
    rules = _rules(
        {"name": "r1", "route": [{"department": "marketing", "priority": "P3"}]},
        {"name": "r2", "route": [{"department": "product", "priority": "P2"}]},
        {"name": "r3", "route": [{"department": "support", "priority": "P2"}]},
    )
    assert _route(rules).departments == ["product", "support", "marketing"]


def test_stop_ends_evaluation_but_keeps_earlier_matches() -> None:
    rules = _rules(
        {"name": "early", "when": {"topics_any": ["a"]}, "route": [{"department": "support"}]},
        {"name": "halt", "when": {"topics_any": ["a"]}, "route": [{"department": "rnd"}], "stop": True},
        {"name": "late", "when": {"topics_any": ["a"]}, "route": [{"department": "pr"}]},
    )
    decision = _route(rules, "a")
    assert set(decision.departments) == {"support", "rnd"}
    assert decision.matched_rules == ("early", "halt")


def test_stop_on_a_rule_that_does_not_match_changes_nothing() -> None:
    rules = _rules(
        {"name": "halt", "when": {"topics_any": ["b"]}, "route": [{"department": "rnd"}], "stop": True},
        {"name": "late", "when": {"topics_any": ["a"]}, "route": [{"department": "pr"}]},
    )
    assert _route(rules, "a").matched_rules == ("late",)


@pytest.mark.parametrize(
    ("when", "matching", "not_matching"),
    [
        ({"topics_all": ["a", "b"]}, {"topics": ("a", "b", "c")}, {"topics": ("a",)}),
        ({"sentiment_in": ["negative"]}, {"sentiment": Sentiment.NEGATIVE}, {"sentiment": Sentiment.NEUTRAL}),
        ({"min_score": 0.5}, {"score": 0.5}, {"score": 0.49}),
        ({"max_score": -0.5}, {"score": -0.5}, {"score": -0.4}),
        ({"kind_in": ["comment"]}, {"kind": MentionKind.COMMENT}, {"kind": MentionKind.POST}),
        ({"min_influence": 2}, {"influence": 2}, {"influence": 1}),
    ],
)
def test_each_condition(when: dict[str, Any], matching: dict[str, Any], not_matching: dict[str, Any]) -> None:
    rules = _rules({"name": "r", "when": when, "route": [{"department": "rnd"}]})
    topics = matching.pop("topics", ())
    assert _route(rules, *topics, **matching).matched_rules == ("r",)
    topics = not_matching.pop("topics", ())
    assert _route(rules, *topics, **not_matching).matched_rules == ("fallback",)


def test_the_defaults_of_a_target() -> None:
    rules = _rules({"name": "r", "route": [{"department": "rnd"}]})
    assert _summary(_route(rules)) == [("rnd", "P3", 1440)]


# --- validation -------------------------------------------------------------------------------


def _invalid(rule: dict[str, Any], match: str, *, known_topics: list[str] | None = None) -> None:
    data = {
        "fallback": {"department": "marketing"},
        "rules": [{"name": "fine", "route": [{"department": "rnd"}]}, rule],
    }
    with pytest.raises(ConfigError, match=match):
        RuleSet.from_dict(data, known_topics=known_topics, where="routing.yaml")


def test_an_unknown_department_names_the_rule() -> None:
    _invalid(
        {"name": "to-legal", "route": [{"department": "legal"}]},
        r"^routing.yaml: rule 'to-legal': route #1: department 'legal' is not one of",
    )


def test_an_unknown_topic_names_the_rule_when_topics_are_known(known_topics: list[str]) -> None:
    rule = {"name": "typo", "when": {"topics_any": ["securty"]}, "route": [{"department": "rnd"}]}
    _invalid(rule, r"rule 'typo': unknown topic\(s\) \['securty'\]", known_topics=known_topics)
    rule_all = {"name": "typo", "when": {"topics_all": ["bug", "crashes"]}, "route": [{"department": "rnd"}]}
    _invalid(rule_all, r"rule 'typo': unknown topic\(s\) \['crashes'\]", known_topics=known_topics)
    # Without known topics the name cannot be checked, and is accepted.
    RuleSet.from_dict({"fallback": {"department": "rnd"}, "rules": [rule]})


def test_an_unknown_condition_names_the_rule_and_the_known_ones() -> None:
    _invalid(
        {"name": "odd", "when": {"topic_any": ["bug"]}, "route": [{"department": "rnd"}]},
        r"rule 'odd': unknown condition\(s\) \['topic_any'\]; known: \[.*'topics_any'",
    )


@pytest.mark.parametrize("priority", ["P0", "P5", "p1", "high", 1])
def test_a_bad_priority_names_the_rule(priority: Any) -> None:
    _invalid(
        {"name": "urgent", "route": [{"department": "rnd"}, {"department": "pr", "priority": priority}]},
        r"rule 'urgent': route #2: priority .* is not one of P1..P4",
    )


def test_min_score_above_max_score_can_never_match() -> None:
    _invalid(
        {"name": "never", "when": {"min_score": 0.5, "max_score": -0.5}, "route": [{"department": "rnd"}]},
        r"rule 'never': can never match \(min_score 0.5 > max_score -0.5\)",
    )


def test_a_duplicate_rule_name_is_refused() -> None:
    _invalid({"name": "fine", "route": [{"department": "pr"}]}, r"rule 'fine': the name is used twice")


@pytest.mark.parametrize(
    ("rule", "match"),
    [
        ({"route": [{"department": "rnd"}]}, r"rule #2: needs a `name`"),
        ("just a string", r"rule #2: expected a mapping"),
        ({"name": "r", "route": []}, r"rule 'r': `route` must list at least one department"),
        (
            {"name": "r", "when": ["bug"], "route": [{"department": "rnd"}]},
            r"rule 'r': `when` must be a mapping",
        ),
        (
            {"name": "r", "when": {"sentiment_in": ["angry"]}, "route": [{"department": "rnd"}]},
            r"rule 'r': unknown sentiment\(s\) \['angry'\]",
        ),
        (
            {"name": "r", "when": {"kind_in": ["tweet"]}, "route": [{"department": "rnd"}]},
            r"rule 'r': unknown kind\(s\) \['tweet'\]",
        ),
        (
            {"name": "r", "when": {"min_score": 2}, "route": [{"department": "rnd"}]},
            r"rule 'r': `min_score` must be a number in \[-1, 1\]",
        ),
        (
            {"name": "r", "when": {"min_influence": 4}, "route": [{"department": "rnd"}]},
            r"rule 'r': min_influence must be 1..3",
        ),
        (
            {"name": "r", "route": [{"department": "rnd", "sla_minutes": 0}]},
            r"rule 'r': route #1: sla_minutes must be a positive whole number",
        ),
    ],
)
def test_other_invalid_rules_are_refused_with_their_name(rule: Any, match: str) -> None:
    _invalid(rule, match)


def test_a_missing_fallback_and_a_non_mapping_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fallback: expected"):
        RuleSet.from_dict({"rules": []})
    with pytest.raises(ConfigError, match="expected a mapping with `rules` and `fallback`"):
        RuleSet.from_dict(["rules"])
    path = tmp_path / "routing.yaml"
    path.write_text("rules: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="are not valid YAML"):
        RuleSet.from_file(path)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"stop": "false"}, "`stop` must be true or false"),
        ({"when": {"min_influence": True}}, "`min_influence` must be a whole number"),
        ({"route": [{"department": "rnd", "sla_minutes": True}]}, "sla_minutes must be a positive"),
    ],
)
def test_loose_values_are_refused(rule: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"name": "r", "route": [{"department": "rnd"}]}
    base.update(rule)
    with pytest.raises(ConfigError, match=re.escape(message)):
        RuleSet.from_dict({"fallback": {"department": "marketing"}, "rules": [base]})
