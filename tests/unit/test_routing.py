"""Routing rules: the shipped defaults rule by rule, how matches combine, every condition, the canonical
form, the dry-run trace, and validation."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared.classify import RuleEngine, Taxonomy
from shared.errors import ConfigError
from shared.events import (
    Classification,
    Department,
    DepartmentLabel,
    Intent,
    Mention,
    MentionKind,
    Sentiment,
    TopicLabel,
)
from shared.routing import CONDITIONS, Decision, RuleError, RuleSet
from shared.settings import REPO_ROOT


def _mention(
    *,
    influence: int = 1,
    kind: MentionKind = MentionKind.POST,
    title: str = "",
    text: str = "",
    author: str = "",
    source_id: str = "s1",
) -> Mention:
    return Mention(
        id="m1",
        source_id=source_id,
        kind=kind,
        influence=influence,
        title=title,
        text=text,
        author=author,
        published_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def _classification(
    *topics: str,
    sentiment: Sentiment = Sentiment.NEUTRAL,
    score: float = 0.0,
    intent: Intent = Intent.INFORMATION,
    urgency: float = 0.0,
    language: str = "en",
    suggested: tuple[str, ...] = (),
) -> Classification:
    return Classification(
        sentiment=sentiment,
        sentiment_score=score,
        sentiment_confidence=0.5,
        topics=[TopicLabel(name=t, confidence=0.55) for t in topics],
        engine="test",
        engine_version="0",
        intent=intent,
        urgency=urgency,
        language=language,
        departments=[DepartmentLabel(name=Department(d), confidence=0.8) for d in suggested],
    )


def _route(rules: RuleSet, *topics: str, **facts: Any) -> Decision:
    mention_keys = {"influence", "kind", "title", "text", "author", "source_id"}
    mention = _mention(**{k: v for k, v in facts.items() if k in mention_keys})
    c = _classification(*topics, **{k: v for k, v in facts.items() if k not in mention_keys})
    return rules.evaluate(mention, c)


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


# --- the shipped rules, one by one -----------------------------------------------------------------

# (rule, what the mention is, the decision: assignments, matched rules, tags)
DEFAULT_RULES: list[tuple[str, dict[str, Any], list[tuple[str, str, int]], list[str], list[str]]] = [
    (
        "security-to-rnd-and-pr",
        {"topics": ["security"]},
        [("rnd", "P1", 60), ("pr", "P2", 240)],
        ["security-to-rnd-and-pr"],
        ["security"],
    ),
    (
        "outage-to-rnd-and-support",
        {"topics": ["outage"]},
        [("rnd", "P2", 120), ("support", "P2", 120)],
        ["outage-to-rnd-and-support"],
        ["outage"],
    ),
    ("bug-to-rnd", {"topics": ["bug"]}, [("rnd", "P3", 1440)], ["bug-to-rnd"], ["defect"]),
    (
        "bug-question-to-support",
        {"topics": ["bug"], "intent": Intent.QUESTION},
        [("support", "P2", 240), ("rnd", "P3", 1440)],
        ["bug-to-rnd", "bug-question-to-support"],
        ["defect", "customer-help"],
    ),
    (
        "bug-help-request-to-support",
        {"topics": ["bug"], "text": "Export broke again. Anyone else? I need HELP before Friday."},
        [("support", "P2", 240), ("rnd", "P3", 1440)],
        ["bug-to-rnd", "bug-help-request-to-support"],
        ["defect", "customer-help"],
    ),
    ("research-to-rnd", {"topics": ["research"]}, [("rnd", "P3", 1440)], ["research-to-rnd"], []),
    (
        "customer-problem-to-support",
        {"topics": ["account"]},
        [("support", "P2", 240)],
        ["customer-problem-to-support"],
        ["customer-help"],
    ),
    (
        "product-feedback",
        {"topics": ["usability"]},
        [("product", "P3", 2880)],
        ["product-feedback"],
        ["product-feedback"],
    ),
    (
        "praise-to-marketing",
        {"topics": ["praise"]},
        [("marketing", "P3", 1440)],
        ["praise-to-marketing"],
        ["advocacy"],
    ),
    (
        "competitor-to-marketing",
        {"topics": ["competitor"]},
        [("marketing", "P3", 1440)],
        ["competitor-to-marketing"],
        ["competitor"],
    ),
    (
        "pricing-and-partners-to-marketing",
        {"topics": ["pricing"]},
        [("marketing", "P3", 1440)],
        ["pricing-and-partners-to-marketing"],
        [],
    ),
    ("press-and-reputation", {"topics": ["press"]}, [("pr", "P2", 480)], ["press-and-reputation"], []),
    (
        "urgent-crisis-to-pr",
        {"topics": ["crisis"], "urgency": 0.6},
        [("pr", "P1", 120)],
        ["press-and-reputation", "urgent-crisis-to-pr"],
        ["escalate-risk"],
    ),
    (
        "negative-from-influential-source",
        {"sentiment": Sentiment.NEGATIVE, "score": -0.6, "influence": 3},
        [("pr", "P1", 120)],
        ["negative-from-influential-source"],
        ["escalate-risk"],
    ),
    *[
        (
            f"learned-suggests-{d}",
            {"suggested": (d,)},
            [(d, "P3", {"support": 480, "rnd": 1440, "product": 2880, "pr": 480, "marketing": 1440}[d])],
            [f"learned-suggests-{d}"],
            [],
        )
        for d in ("support", "rnd", "product", "pr", "marketing")
    ],
]


def test_every_default_rule_has_a_test(defaults: RuleSet) -> None:
    assert [r.name for r in defaults.rules] == [name for name, *_ in DEFAULT_RULES]


@pytest.mark.parametrize(
    ("rule", "facts", "assignments", "matched", "tags"), DEFAULT_RULES, ids=[r[0] for r in DEFAULT_RULES]
)
def test_each_default_rule(
    defaults: RuleSet,
    rule: str,
    facts: dict[str, Any],
    assignments: list[tuple[str, str, int]],
    matched: list[str],
    tags: list[str],
) -> None:
    facts = dict(facts)
    decision = _route(defaults, *facts.pop("topics", ()), **facts)
    assert _summary(decision) == assignments
    assert list(decision.matched_rules) == matched
    assert list(decision.tags) == tags
    assert rule in decision.matched_rules


def test_fan_out_a_security_mention_reaches_rnd_at_p1_and_pr(defaults: RuleSet) -> None:
    decision = _route(defaults, "security")
    assert decision.departments == ["rnd", "pr"]
    rnd, pr = decision.assignments
    assert (rnd.priority.value, rnd.sla_minutes, rnd.rules) == ("P1", 60, ["security-to-rnd-and-pr"])
    assert (pr.priority.value, pr.sla_minutes, pr.rules) == ("P2", 240, ["security-to-rnd-and-pr"])


def test_fan_out_a_security_hole_from_an_influential_blog_reaches_pr_at_p1(defaults: RuleSet) -> None:
    # security gives pr P2/240, the influential-negative rule gives pr P1/120: P1 wins, both are named.
    decision = _route(defaults, "security", sentiment=Sentiment.NEGATIVE, score=-0.8, influence=3)
    assert _summary(decision) == [("rnd", "P1", 60), ("pr", "P1", 120)]
    assert decision.assignments[1].rules == ["security-to-rnd-and-pr", "negative-from-influential-source"]
    assert decision.tags == ("security", "escalate-risk")


def test_fan_out_puts_the_primary_department_first(defaults: RuleSet) -> None:
    # "customer-problem-to-support" (P2) is primary although "product-feedback" (P3) picks product too.
    decision = _route(defaults, "feature_request", "how_to")
    assert _summary(decision) == [("support", "P2", 240), ("product", "P3", 2880)]


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
        ("research", "rnd"),
    ],
)
def test_each_topic_reaches_its_department(defaults: RuleSet, topic: str, department: str) -> None:
    decision = _route(defaults, topic)
    assert decision.departments == [department]
    assert not decision.fallback


@pytest.mark.parametrize(
    ("sentiment", "influence"), [(Sentiment.NEGATIVE, 2), (Sentiment.NEUTRAL, 3), (Sentiment.POSITIVE, 3)]
)
def test_only_negative_and_influential_together_reach_pr(
    defaults: RuleSet, sentiment: Sentiment, influence: int
) -> None:
    decision = _route(defaults, sentiment=sentiment, influence=influence)
    assert _summary(decision) == [("marketing", "P4", 2880)]
    assert decision.matched_rules == ("fallback",)


def test_a_bug_without_a_request_for_help_stays_with_rnd(defaults: RuleSet) -> None:
    decision = _route(defaults, "bug", intent=Intent.COMPLAINT, text="It helps nobody that it crashes.")
    assert decision.departments == ["rnd"]  # "helps" is not the keyword "help"


def test_a_calm_crisis_stays_at_p2(defaults: RuleSet) -> None:
    assert _summary(_route(defaults, "crisis", urgency=0.3)) == [("pr", "P2", 480)]


def test_nothing_matched_goes_to_the_fallback(defaults: RuleSet) -> None:
    decision = _route(defaults)
    assert _summary(decision) == [("marketing", "P4", 2880)]
    assert decision.assignments[0].rules == ["fallback"]
    assert decision.fallback and decision.tags == ()


def test_the_rule_engine_routes_real_text_with_the_defaults(defaults: RuleSet) -> None:
    engine = RuleEngine(Taxonomy.from_file(REPO_ROOT / "config" / "taxonomy.yaml"))
    mention = _mention(text="Tessellate crashes when I paste an image. Is there a known fix for this?")
    decision = defaults.evaluate(mention, engine.classify(mention))
    assert decision.departments == ["support", "rnd"]
    assert "customer-help" in decision.tags


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
        {"name": "halt", "when": {"topics_all": ["a", "b"]}, "route": [{"department": "rnd"}], "stop": True},
        {"name": "late", "when": {"topics_any": ["a"]}, "route": [{"department": "pr"}]},
    )
    decision = _route(rules, "a", "b")
    assert set(decision.departments) == {"support", "rnd"}
    assert decision.matched_rules == ("early", "halt")
    assert _route(rules, "a").matched_rules == ("early", "late")


def test_stop_on_a_rule_that_does_not_match_changes_nothing() -> None:
    rules = _rules(
        {"name": "halt", "when": {"topics_any": ["b"]}, "route": [{"department": "rnd"}], "stop": True},
        {"name": "late", "when": {"topics_any": ["a"]}, "route": [{"department": "pr"}]},
    )
    assert _route(rules, "a").matched_rules == ("late",)


def test_tags_are_the_union_of_the_matched_rules_in_rule_order() -> None:
    rules = _rules(
        {"name": "r1", "when": {"topics_any": ["a"]}, "route": [{"department": "rnd"}], "tags": ["x", "y"]},
        {"name": "r2", "when": {"topics_any": ["b"]}, "route": [{"department": "pr"}], "tags": ["z"]},
        {"name": "r3", "route": [{"department": "pr"}], "tags": ["y", "w"]},
    )
    assert _route(rules, "a").tags == ("x", "y", "w")
    assert _route(rules, "b").tags == ("z", "y", "w")


def test_the_defaults_of_a_target() -> None:
    rules = _rules({"name": "r", "route": [{"department": "rnd"}]})
    assert _summary(_route(rules)) == [("rnd", "P3", 1440)]


# --- each condition ---------------------------------------------------------------------------

CONDITION_CASES: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    ({"topics_any": ["a", "b"]}, {"topics": ("b", "c")}, {"topics": ("c",)}),
    ({"topics_all": ["a", "b"]}, {"topics": ("a", "b", "c")}, {"topics": ("a",)}),
    ({"topics_none": ["a", "b"]}, {"topics": ("c",)}, {"topics": ("c", "b")}),
    ({"sentiment_in": ["negative"]}, {"sentiment": Sentiment.NEGATIVE}, {"sentiment": Sentiment.NEUTRAL}),
    ({"min_score": 0.5}, {"score": 0.5}, {"score": 0.49}),
    ({"max_score": -0.5}, {"score": -0.5}, {"score": -0.4}),
    ({"intent_in": ["question", "complaint"]}, {"intent": Intent.COMPLAINT}, {"intent": Intent.PRAISE}),
    ({"min_urgency": 0.7}, {"urgency": 0.7}, {"urgency": 0.69}),
    ({"max_urgency": 0.2}, {"urgency": 0.2}, {"urgency": 0.21}),
    ({"language_in": ["de", "fr"]}, {"language": "fr"}, {"language": "en"}),
    ({"language_in": ["und"]}, {"language": "und"}, {"language": "en"}),
    ({"kind_in": ["comment"]}, {"kind": MentionKind.COMMENT}, {"kind": MentionKind.POST}),
    ({"source_in": ["blog-1", "blog-2"]}, {"source_id": "blog-2"}, {"source_id": "blog-3"}),
    ({"min_influence": 2}, {"influence": 2}, {"influence": 1}),
    ({"max_influence": 1}, {"influence": 1}, {"influence": 2}),
    ({"author_in": ["Maren Holt"]}, {"author": "  maren HOLT "}, {"author": "Maren Holter"}),
    ({"keywords_any": ["refund"]}, {"text": "I want a Refund."}, {"text": "refunds are slow"}),
    ({"keywords_any": ["data loss"]}, {"text": "Total DATA\n  loss!"}, {"text": "data, loss"}),
    ({"keywords_any": ["c++"]}, {"text": "the C++ SDK"}, {"text": "the c+ SDK"}),
    ({"keywords_any": ["tessellate"]}, {"title": "Tessellate"}, {"text": "tessellated"}),
    ({"keywords_any": ["größe"]}, {"text": "Die GRÖSSE und die Größe"}, {"text": "Größen"}),
    (
        {"text_query": '"acme cloud" OR acmecloud -jobs'},
        {"text": "Acme  Cloud is down"},
        {"text": "acmecloud jobs"},
    ),
    ({"departments_any": ["product"]}, {"suggested": ("product",)}, {"suggested": ("rnd",)}),
    ({"departments_none": ["product"]}, {"suggested": ("rnd",)}, {"suggested": ("rnd", "product")}),
    ({"departments_none": [d.value for d in Department]}, {"suggested": ()}, {"suggested": ("marketing",)}),
]


@pytest.mark.parametrize(
    ("when", "matching", "not_matching"), CONDITION_CASES, ids=[next(iter(c[0])) for c in CONDITION_CASES]
)
def test_each_condition(when: dict[str, Any], matching: dict[str, Any], not_matching: dict[str, Any]) -> None:
    rules = _rules({"name": "r", "when": when, "route": [{"department": "rnd"}]})
    for facts, expected in ((matching, ("r",)), (not_matching, ("fallback",))):
        facts = dict(facts)
        assert _route(rules, *facts.pop("topics", ()), **facts).matched_rules == expected, facts


def test_every_condition_is_covered_by_a_case() -> None:
    assert {k for when, _, _ in CONDITION_CASES for k in when} == set(CONDITIONS)


def test_keywords_on_ascii_and_other_text_agree() -> None:
    rules = _rules(
        {"name": "r", "when": {"keywords_any": ["board", "dark mode"]}, "route": [{"department": "rnd"}]}
    )
    for text, hit in [
        ("the board", True),
        ("the board\u2019s colour", True),  # typographic punctuation: a space for the word split
        ("\u201cBoard\u201d\u00a0\u2014 ok", True),
        ("dark\u2014mode", False),  # a phrase needs white space between its words
        ("Größe board", True),  # other text: the general path
        ("dashboard — café", False),
        ("Dark   Mode, bitte", True),
        ("dark_mode", False),
        ("boards", False),
    ]:
        assert (_route(rules, text=text).matched_rules == ("r",)) is hit, text


def test_conditions_combine_with_and() -> None:
    rules = _rules(
        {
            "name": "r",
            "when": {"topics_any": ["bug"], "kind_in": ["comment"], "keywords_any": ["help"]},
            "route": [{"department": "support"}],
        }
    )
    assert _route(rules, "bug", kind=MentionKind.COMMENT, text="help!").matched_rules == ("r",)
    assert _route(rules, "bug", kind=MentionKind.POST, text="help!").fallback
    assert _route(rules, "bug", kind=MentionKind.COMMENT, text="fine").fallback
    assert _route(rules, kind=MentionKind.COMMENT, text="help!").fallback


# --- dry run: the trace -----------------------------------------------------------------------


def test_explain_names_each_matched_rule_and_the_conditions_that_held(defaults: RuleSet) -> None:
    mention = _mention(influence=3, text="An XSS hole, and nobody answers. Anyone else seeing this?")
    c = _classification("security", "bug", sentiment=Sentiment.NEGATIVE, score=-0.7, intent=Intent.QUESTION)
    decision = defaults.evaluate(mention, c, explain=True)
    assert decision.assignments == defaults.evaluate(mention, c).assignments
    trace = {m.name: m for m in decision.trace}
    assert list(trace) == list(decision.matched_rules)
    assert trace["security-to-rnd-and-pr"].index == 1
    assert trace["security-to-rnd-and-pr"].conditions == ("topics_any: security",)
    assert [t.department.value for t in trace["security-to-rnd-and-pr"].targets] == ["rnd", "pr"]
    unsuggested = "departments_none: none of marketing, pr, support, rnd, product suggested"
    assert trace["bug-question-to-support"].conditions == (
        "topics_any: bug",
        "intent_in: question",
        unsuggested,
    )
    assert trace["bug-help-request-to-support"].conditions == (
        "topics_any: bug",
        "keywords_any: anyone else",
        unsuggested,
    )
    assert trace["negative-from-influential-source"].conditions == (
        "sentiment_in: negative",
        "min_influence: influence 3 >= 3",
    )
    assert trace["negative-from-influential-source"].tags == ("escalate-risk",)
    # Without explain the trace stays empty (and the shared decision is not given one).
    assert defaults.evaluate(mention, c).trace == ()


def test_explain_of_ranges_text_and_unconditional_rules() -> None:
    rules = _rules(
        {"name": "scored", "when": {"max_score": -0.2, "min_urgency": 0.5}, "route": [{"department": "pr"}]},
        {"name": "query", "when": {"text_query": "refund -jobs"}, "route": [{"department": "support"}]},
        {"name": "always", "route": [{"department": "rnd"}]},
    )
    decision = rules.evaluate(
        _mention(text="Refund please"), _classification(score=-0.5, urgency=0.8), explain=True
    )
    assert [m.conditions for m in decision.trace] == [
        ("max_score: score -0.5 <= -0.2", "min_urgency: urgency 0.8 >= 0.5"),
        ("text_query: refund -jobs",),
        ("always (no conditions)",),
    ]


def test_rule_check_gives_none_when_a_condition_fails(defaults: RuleSet) -> None:
    rule = defaults.rules[0]
    assert rule.check(_mention(), _classification("security")) == ("topics_any: security",)
    assert rule.check(_mention(), _classification("bug")) is None


# --- the canonical form -----------------------------------------------------------------------

RICH: dict[str, Any] = {
    "version": "7",
    "description": "every condition and action",
    "fallback": {"department": "support", "priority": "P4", "sla_minutes": 600},
    "rules": [
        {
            "name": "everything",
            "description": "all conditions",
            "when": {
                "topics_any": ["bug", "outage"],
                "topics_all": ["bug"],
                "topics_none": ["press"],
                "sentiment_in": ["negative", "neutral"],
                "min_score": -1,
                "max_score": 0.5,
                "intent_in": ["question"],
                "min_urgency": 0.1,
                "max_urgency": 1,
                "language_in": ["en", "de"],
                "kind_in": ["comment"],
                "source_in": ["src-1"],
                "min_influence": 1,
                "max_influence": 2,
                "author_in": ["Dana Whitfield"],
                "keywords_any": ["crash", "data   loss"],
                "text_query": '"tessellate boards" OR tessellate -jobs',
                "departments_any": ["rnd"],
                "departments_none": ["pr"],
            },
            "route": [{"department": "rnd", "priority": "P1", "sla_minutes": 30}, {"department": "support"}],
            "tags": ["a", "b"],
            "stop": True,
        },
        {"name": "short", "route": [{"department": "pr"}]},
    ],
}


def test_to_dict_is_canonical_and_round_trips(defaults: RuleSet) -> None:
    for rules in (defaults, RuleSet.from_dict(RICH)):
        data = rules.to_dict()
        assert json.loads(json.dumps(data)) == data
        again = RuleSet.from_dict(data)
        assert again.to_dict() == data
        assert again.rules == rules.rules and again.fallback == rules.fallback
    data = RuleSet.from_dict(RICH).to_dict()
    assert data["version"] == "7" and data["description"] == "every condition and action"
    assert list(data["rules"][0]["when"]) == list(CONDITIONS)  # the canonical order
    assert data["rules"][0]["when"]["keywords_any"] == ["crash", "data loss"]
    assert data["rules"][0]["when"]["min_score"] == -1.0
    assert data["rules"][0]["route"][1] == {"department": "support", "priority": "P3", "sla_minutes": 1440}
    assert data["rules"][1] == {
        "name": "short",
        "when": {},
        "route": [{"department": "pr", "priority": "P3", "sla_minutes": 1440}],
        "tags": [],
        "stop": False,
    }


def test_the_yaml_and_its_canonical_form_decide_alike(defaults: RuleSet) -> None:
    again = RuleSet.from_dict(json.loads(json.dumps(defaults.to_dict())))
    for topics in [(), ("security",), ("bug",), ("crisis",), ("how_to", "pricing")]:
        a = _route(defaults, *topics, intent=Intent.QUESTION, urgency=0.9)
        b = _route(again, *topics, intent=Intent.QUESTION, urgency=0.9)
        assert (a.assignments, a.matched_rules, a.tags) == (b.assignments, b.matched_rules, b.tags)


def test_lists_are_deduplicated_and_a_single_string_is_a_list() -> None:
    rules = RuleSet.from_dict(
        {
            "fallback": {"department": "rnd"},
            "rules": [
                {
                    "name": "r",
                    "when": {
                        "topics_any": "bug",
                        "author_in": ["Ana", "ANA", "Bo"],
                        "keywords_any": ["Help", "help", " dark  mode "],
                    },
                    "route": [{"department": "rnd"}],
                    "tags": ["x", "x"],
                }
            ],
        }
    )
    when = rules.to_dict()["rules"][0]["when"]
    assert when == {"topics_any": ["bug"], "author_in": ["Ana", "Bo"], "keywords_any": ["Help", "dark mode"]}
    assert rules.rules[0].tags == ("x",)


# --- validation -------------------------------------------------------------------------------


def _invalid(
    rule: Any, match: str, *, known_topics: list[str] | None = None, before: Any = None
) -> RuleError:
    data = {
        "fallback": {"department": "marketing"},
        "rules": [before or {"name": "fine", "route": [{"department": "rnd"}]}, rule],
    }
    with pytest.raises(RuleError, match=match) as info:
        RuleSet.from_dict(data, known_topics=known_topics, where="routing.yaml")
    assert info.value.index == 2
    return info.value


def test_a_rule_error_points_at_the_rule() -> None:
    error = _invalid(
        {"name": "to-legal", "route": [{"department": "legal"}]},
        r"^routing.yaml: rule #2 'to-legal': route #1: department 'legal' is not one of",
    )
    assert isinstance(error, ConfigError)
    assert (error.index, error.rule, error.field) == (2, "to-legal", "route[1].department")
    assert error.as_dict() == {
        "message": str(error),
        "rule_index": 2,
        "rule": "to-legal",
        "field": "route[1].department",
        "reason": "route #1: department 'legal' is not one of marketing, pr, support, rnd, product",
    }


def test_an_unknown_topic_names_the_rule_when_topics_are_known(known_topics: list[str]) -> None:
    for key in ("topics_any", "topics_all", "topics_none"):
        rule = {"name": "typo", "when": {key: ["bug", "securty"]}, "route": [{"department": "rnd"}]}
        error = _invalid(rule, r"rule #2 'typo': unknown topic\(s\) \['securty'\]", known_topics=known_topics)
        assert error.field == f"when.{key}"
    # Without known topics the name cannot be checked, and is accepted.
    RuleSet.from_dict({"fallback": {"department": "rnd"}, "rules": [rule]})


def test_an_unknown_condition_names_the_rule_and_the_known_ones() -> None:
    _invalid(
        {"name": "odd", "when": {"topic_any": ["bug"]}, "route": [{"department": "rnd"}]},
        r"rule #2 'odd': unknown condition\(s\) \['topic_any'\]; known: \[.*'topics_any'",
    )


def test_an_unknown_key_of_a_rule_is_refused() -> None:
    # A condition written beside `when` instead of inside it would otherwise be silently ignored.
    _invalid(
        {"name": "flat", "topics_any": ["bug"], "route": [{"department": "rnd"}]},
        r"rule #2 'flat': unknown key\(s\) \['topics_any'\]; a rule has name, description, when, route",
    )
    _invalid(
        {"name": "r", "route": [{"department": "rnd", "prio": "P1"}]},
        r"rule #2 'r': route #1: unknown key\(s\) \['prio'\]",
    )


@pytest.mark.parametrize("priority", ["P0", "P5", "p1", "high", 1])
def test_a_bad_priority_names_the_rule(priority: Any) -> None:
    _invalid(
        {"name": "urgent", "route": [{"department": "rnd"}, {"department": "pr", "priority": priority}]},
        r"rule #2 'urgent': route #2: priority .* is not one of P1..P4",
    )


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ({"min_score": 0.5, "max_score": -0.5}, "can never match (min_score 0.5 > max_score -0.5)"),
        ({"min_urgency": 0.8, "max_urgency": 0.2}, "can never match (min_urgency 0.8 > max_urgency 0.2)"),
        ({"min_influence": 3, "max_influence": 2}, "can never match (min_influence 3 > max_influence 2)"),
        ({"sentiment_in": []}, "can never match (`sentiment_in` is an empty list)"),
        ({"topics_any": []}, "can never match (`topics_any` is an empty list)"),
        ({"keywords_any": []}, "can never match (`keywords_any` is an empty list)"),
        (
            {"topics_all": ["bug", "press"], "topics_none": ["press"]},
            "can never match (topic(s) ['press'] both in topics_all and topics_none)",
        ),
        (
            {"topics_any": ["bug", "press"], "topics_none": ["press", "bug", "crisis"]},
            "can never match (every topic of topics_any is in topics_none)",
        ),
        (
            {"departments_any": ["pr"], "departments_none": ["pr", "rnd"]},
            "can never match (every department of departments_any is in departments_none)",
        ),
        ({"topics_any": None}, "`topics_any` is empty: give it a value or remove it"),
    ],
)
def test_a_rule_that_can_never_match_is_refused(when: dict[str, Any], message: str) -> None:
    _invalid({"name": "never", "when": when, "route": [{"department": "rnd"}]}, re.escape(message))


def test_a_rule_after_an_unconditional_stop_is_unreachable() -> None:
    error = _invalid(
        {"name": "late", "when": {"topics_any": ["bug"]}, "route": [{"department": "pr"}]},
        r"rule #2 'late': can never match: rule #1 'catch-all' has no conditions and stops every evaluation",
        before={"name": "catch-all", "route": [{"department": "rnd"}], "stop": True},
    )
    assert error.field == "when"


@pytest.mark.parametrize(
    ("earlier", "later"),
    [
        ({"topics_any": ["bug", "outage"]}, {"topics_any": ["bug"], "sentiment_in": ["negative"]}),
        ({"topics_any": ["bug"]}, {"topics_all": ["bug", "press"]}),
        ({"topics_all": ["bug"]}, {"topics_any": ["bug"], "kind_in": ["comment"]}),
        ({"topics_none": ["press"]}, {"topics_none": ["press", "crisis"]}),
        ({"sentiment_in": ["negative", "neutral"]}, {"sentiment_in": ["negative"]}),
        ({"min_score": 0.2}, {"min_score": 0.5, "max_score": 0.9}),
        ({"max_urgency": 0.5}, {"max_urgency": 0.3}),
        ({"min_influence": 2}, {"min_influence": 3}),
        ({"author_in": ["Ana", "Bo"]}, {"author_in": ["ana"]}),
        ({"keywords_any": ["help", "fix"]}, {"keywords_any": ["HELP"], "topics_any": ["bug"]}),
        ({"text_query": "a OR b"}, {"text_query": "a OR b", "language_in": ["en"]}),
        ({"departments_any": ["rnd", "pr"]}, {"departments_any": ["pr"]}),
        ({"departments_none": ["pr"]}, {"departments_none": ["pr", "rnd"]}),
    ],
)
def test_a_rule_shadowed_by_an_earlier_stop_rule_is_refused(
    earlier: dict[str, Any], later: dict[str, Any]
) -> None:
    _invalid(
        {"name": "shadowed", "when": later, "route": [{"department": "pr"}]},
        r"rule #2 'shadowed': can never match: rule #1 'wide' matches whenever this rule would, and stops",
        before={"name": "wide", "when": earlier, "route": [{"department": "rnd"}], "stop": True},
    )


@pytest.mark.parametrize(
    ("earlier", "later"),
    [
        ({"topics_any": ["bug"]}, {"topics_any": ["bug", "outage"]}),  # the later one is wider
        ({"topics_all": ["bug", "press"]}, {"topics_any": ["bug"]}),
        ({"sentiment_in": ["negative"]}, {"topics_any": ["bug"]}),
        ({"min_score": 0.5}, {"min_score": 0.2}),
        ({"keywords_any": ["help"]}, {"keywords_any": ["help", "fix"]}),
        ({"text_query": "a OR b"}, {"text_query": "a"}),  # not decided: kept
    ],
)
def test_a_narrower_earlier_stop_rule_is_fine(earlier: dict[str, Any], later: dict[str, Any]) -> None:
    RuleSet.from_dict(
        {
            "fallback": {"department": "rnd"},
            "rules": [
                {"name": "narrow", "when": earlier, "route": [{"department": "rnd"}], "stop": True},
                {"name": "later", "when": later, "route": [{"department": "pr"}]},
            ],
        }
    )
    # Without `stop`, a wider earlier rule shadows nothing.
    RuleSet.from_dict(
        {
            "fallback": {"department": "rnd"},
            "rules": [
                {"name": "wide", "route": [{"department": "rnd"}]},
                {"name": "later", "when": later, "route": [{"department": "pr"}]},
            ],
        }
    )


def test_a_duplicate_rule_name_is_refused() -> None:
    error = _invalid(
        {"name": "fine", "route": [{"department": "pr"}]},
        r"rule #2 'fine': the name is used twice \(also rule #1\)",
    )
    assert error.field == "name"


@pytest.mark.parametrize(
    ("rule", "match"),
    [
        ({"route": [{"department": "rnd"}]}, r"rule #2: needs a `name`"),
        ("just a string", r"rule #2: expected a mapping"),
        ({"name": "fallback", "route": [{"department": "rnd"}]}, r"`fallback` is reserved"),
        ({"name": "x" * 101, "route": [{"department": "rnd"}]}, r"longer than 100 characters"),
        ({"name": "r", "route": []}, r"rule #2 'r': `route` must list at least one department"),
        (
            {"name": "r", "route": [{"department": "rnd"}, {"department": "rnd", "priority": "P1"}]},
            r"rule #2 'r': route #2: department 'rnd' is routed twice",
        ),
        ({"name": "r", "when": ["bug"], "route": [{"department": "rnd"}]}, r"`when` must be a mapping"),
        (
            {"name": "r", "when": {"sentiment_in": ["angry"]}, "route": [{"department": "rnd"}]},
            r"rule #2 'r': unknown sentiment\(s\) \['angry'\]",
        ),
        (
            {"name": "r", "when": {"intent_in": ["rant"]}, "route": [{"department": "rnd"}]},
            r"unknown intent\(s\) \['rant'\]; known: complaint, information, praise, question, suggestion",
        ),
        (
            {"name": "r", "when": {"kind_in": ["tweet"]}, "route": [{"department": "rnd"}]},
            r"unknown kind\(s\) \['tweet'\]",
        ),
        (
            {"name": "r", "when": {"departments_any": ["legal"]}, "route": [{"department": "rnd"}]},
            r"unknown department\(s\) \['legal'\]",
        ),
        (
            {"name": "r", "when": {"language_in": ["en", "EN", "eng"]}, "route": [{"department": "rnd"}]},
            r"language code\(s\) \['EN', 'eng'\]: ISO 639-1",
        ),
        (
            {"name": "r", "when": {"min_score": 2}, "route": [{"department": "rnd"}]},
            r"rule #2 'r': `min_score` must be a number in \[-1, 1\]",
        ),
        (
            {"name": "r", "when": {"max_urgency": 1.5}, "route": [{"department": "rnd"}]},
            r"`max_urgency` must be a number in \[0, 1\]",
        ),
        (
            {"name": "r", "when": {"min_score": "high"}, "route": [{"department": "rnd"}]},
            r"`min_score` must be a number",
        ),
        (
            {"name": "r", "when": {"min_influence": 4}, "route": [{"department": "rnd"}]},
            r"rule #2 'r': min_influence must be 1..3",
        ),
        (
            {"name": "r", "when": {"max_influence": 2.5}, "route": [{"department": "rnd"}]},
            r"`max_influence` must be a whole number",
        ),
        (
            {"name": "r", "when": {"topics_any": [1, 2]}, "route": [{"department": "rnd"}]},
            r"`topics_any` must be a list of strings",
        ),
        (
            {"name": "r", "when": {"author_in": ["Ana", " "]}, "route": [{"department": "rnd"}]},
            r"`author_in` has an empty string",
        ),
        (
            {"name": "r", "when": {"keywords_any": ["--"]}, "route": [{"department": "rnd"}]},
            r"keyword '--' has no letter or digit",
        ),
        (
            {"name": "r", "when": {"text_query": '"unclosed'}, "route": [{"department": "rnd"}]},
            r"rule #2 'r': text_query: ",
        ),
        (
            {"name": "r", "when": {"text_query": "a OR"}, "route": [{"department": "rnd"}]},
            r"text_query: OR needs a term on each side",
        ),
        (
            {"name": "r", "route": [{"department": "rnd", "sla_minutes": 0}]},
            r"rule #2 'r': route #1: sla_minutes must be a positive whole number",
        ),
        ({"name": "r", "route": [{"department": "rnd"}], "tags": "has space"}, r"tag 'has space'"),
        ({"name": "r", "route": [{"department": "rnd"}], "tags": [3]}, r"`tags` must be a list of strings"),
        (
            {"name": "r", "route": [{"department": "rnd"}], "description": 5},
            r"`description` must be a string",
        ),
    ],
)
def test_other_invalid_rules_are_refused_with_their_index_and_name(rule: Any, match: str) -> None:
    _invalid(rule, match)


def test_set_level_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fallback: expected"):
        RuleSet.from_dict({"rules": []})
    with pytest.raises(ConfigError, match="rules: fallback: department 'legal'"):
        RuleSet.from_dict({"fallback": {"department": "legal"}})
    with pytest.raises(ConfigError, match="expected a mapping with `rules` and `fallback`"):
        RuleSet.from_dict(["rules"])
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['rule'\]"):
        RuleSet.from_dict({"fallback": {"department": "rnd"}, "rule": []})
    with pytest.raises(ConfigError, match="`rules` must be a list"):
        RuleSet.from_dict({"fallback": {"department": "rnd"}, "rules": {"name": "r"}})
    with pytest.raises(ConfigError, match="`version` must be"):
        RuleSet.from_dict({"fallback": {"department": "rnd"}, "version": True})
    path = tmp_path / "routing.yaml"
    path.write_text("rules: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="are not valid YAML"):
        RuleSet.from_file(path)
    with pytest.raises(ConfigError, match="cannot read routing rules"):
        RuleSet.from_file(tmp_path / "missing.yaml")


def test_an_empty_rule_set_sends_everything_to_the_fallback() -> None:
    rules = RuleSet.from_yaml("fallback: {department: support}\n")
    assert _summary(_route(rules, "bug")) == [("support", "P3", 1440)]
    assert len(rules) == 0 and rules.version == "1"


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"stop": "false"}, "`stop` must be true or false"),
        ({"when": {"min_influence": True}}, "`min_influence` must be a whole number"),
        ({"when": {"min_score": True}}, "`min_score` must be a number"),
        ({"route": [{"department": "rnd", "sla_minutes": True}]}, "sla_minutes must be a positive"),
    ],
)
def test_loose_values_are_refused(rule: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"name": "r", "route": [{"department": "rnd"}]}
    base.update(rule)
    with pytest.raises(RuleError, match=re.escape(message)):
        RuleSet.from_dict({"fallback": {"department": "marketing"}, "rules": [base]})


@pytest.mark.parametrize(
    ("topics", "suggested", "expected"),
    [
        # the model has an opinion: the keyword topic rules step back...
        (("praise",), ("support",), {"support"}),
        (("bug", "how_to"), ("product",), {"product"}),
        (("pricing",), ("rnd", "support"), {"rnd", "support"}),
        # ...but a security problem reaches R&D and PR whatever the model says
        (("security",), ("support",), {"support", "rnd", "pr"}),
        # no opinion (and always with the rule engine): the topic rules decide as before
        (("praise",), (), {"marketing"}),
        (("bug", "how_to"), (), {"rnd", "support"}),
        ((), (), {"marketing"}),  # the fallback
    ],
)
def test_the_default_topic_rules_decide_only_where_the_model_suggests_no_department(
    defaults: RuleSet, topics: tuple[str, ...], suggested: tuple[str, ...], expected: set[str]
) -> None:
    decision = _route(defaults, *topics, suggested=suggested)
    assert {d.value for d in decision.departments} == expected
