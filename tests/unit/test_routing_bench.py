"""The routing-rule benchmark's own logic (bench/rules.py): its rule set and mentions, and the figures
it reports (no timing judged here)."""

from __future__ import annotations

from collections import Counter

from bench.rules import realistic_mentions, realistic_rules, run
from shared.classify import Taxonomy
from shared.routing import CONDITIONS, RuleSet
from shared.settings import REPO_ROOT


def _topics() -> list[str]:
    return sorted(Taxonomy.from_file(REPO_ROOT / "config" / "taxonomy.yaml").topics)


def test_the_rule_set_has_200_valid_rules_of_every_kind() -> None:
    rules = realistic_rules(_topics())
    assert len(rules) == 200
    assert RuleSet.from_dict(rules.to_dict(), known_topics=_topics()).to_dict() == rules.to_dict()
    used = Counter(key for rule in rules.rules for key in rule.when())
    assert set(used) == set(CONDITIONS)
    assert sum(r.stop for r in rules.rules) >= 5
    assert sum(bool(r.tags) for r in rules.rules) >= 40
    # deterministic for a seed
    assert realistic_rules(_topics()).to_dict() == rules.to_dict()
    assert realistic_rules(_topics(), seed=6).to_dict() != rules.to_dict()


def test_the_mentions_are_classified_generated_posts_and_comments() -> None:
    cases = realistic_mentions(60)
    assert len({m.id for m, _ in cases}) == 60
    assert {m.kind.value for m, _ in cases} == {"post", "comment"}
    assert all(300 <= len(m.text) <= 1500 for m, _ in cases)
    assert sum(bool(c.topics) for _, c in cases) > 40


def test_run_reports_the_figures_make_bench_shows() -> None:
    result = run(rules=40, mentions=150, repeats=1)
    assert result["agrees_with_reference"] and result["disagreements"] == 0
    assert result["rules"] == 40 and result["mentions"] == 150
    assert abs(result["rule_checks_per_s"] - result["evaluations_per_s"] * 40) <= 40  # both rounded
    for key in ("evaluations_per_s", "evaluations_per_s_wall", "reference_per_s", "speedup"):
        assert result[key] > 0
    assert 0 < result["matched_rules_per_mention"] < 40
