"""The routing rules as the straightforward loop, written from the documented semantics (config/routing.yaml):
the oracle that shared.routing's compiled evaluator is held to, and the benchmark's baseline.

Each rule is checked condition by condition against the mention, in order, until a matching `stop` rule;
per department the most urgent target wins (priority, then the shorter SLA; a tie keeps the earlier);
assignments are ordered by priority, then by the first rule that chose the department.
"""

from __future__ import annotations

import functools
import re

from shared.events import Assignment, Classification, Department, Mention
from shared.filters import KeywordFilter
from shared.routing import Decision, Rule, RuleSet, Target


@functools.cache
def _keyword(keyword: str) -> re.Pattern[str]:
    words = keyword.lower().split()
    return re.compile(r"(?<!\w)" + r"\s+".join(re.escape(w) for w in words) + r"(?!\w)")


@functools.cache
def _query(query: str) -> KeywordFilter:
    return KeywordFilter.parse(query)


def rule_matches(rule: Rule, mention: Mention, c: Classification) -> bool:
    topics = {t.name for t in c.topics}
    if rule.topics_any and not topics & set(rule.topics_any):
        return False
    if rule.topics_all and not set(rule.topics_all) <= topics:
        return False
    if rule.topics_none and topics & set(rule.topics_none):
        return False
    if rule.sentiment_in and c.sentiment.value not in rule.sentiment_in:
        return False
    if rule.min_score is not None and c.sentiment_score < rule.min_score:
        return False
    if rule.max_score is not None and c.sentiment_score > rule.max_score:
        return False
    if rule.intent_in and c.intent.value not in rule.intent_in:
        return False
    if rule.min_urgency is not None and c.urgency < rule.min_urgency:
        return False
    if rule.max_urgency is not None and c.urgency > rule.max_urgency:
        return False
    if rule.language_in and c.language not in rule.language_in:
        return False
    if rule.kind_in and mention.kind.value not in rule.kind_in:
        return False
    if rule.source_in and mention.source_id not in rule.source_in:
        return False
    if rule.min_influence is not None and mention.influence < rule.min_influence:
        return False
    if rule.max_influence is not None and mention.influence > rule.max_influence:
        return False
    if rule.author_in and mention.author.strip().casefold() not in {a.casefold() for a in rule.author_in}:
        return False
    text = f"{mention.title}\n{mention.text}"
    if rule.keywords_any and not any(_keyword(k).search(text.lower()) for k in rule.keywords_any):
        return False
    if rule.text_query is not None and not _query(rule.text_query).matches(text):
        return False
    suggested = {d.name.value for d in c.departments}
    if rule.departments_none and suggested & set(rule.departments_none):
        return False
    return not rule.departments_any or bool(suggested & set(rule.departments_any))


def reference_evaluate(rules: RuleSet, mention: Mention, c: Classification) -> Decision:
    matched: list[Rule] = []
    for rule in rules.rules:
        if rule_matches(rule, mention, c):
            matched.append(rule)
            if rule.stop:
                break
    best: dict[Department, Target] = {}
    names: dict[Department, list[str]] = {}
    for rule in matched:
        for target in rule.targets:
            names.setdefault(target.department, []).append(rule.name)
            current = best.get(target.department)
            if current is None or (target.priority.value, target.sla_minutes) < (
                current.priority.value,
                current.sla_minutes,
            ):
                best[target.department] = target
    matched_names = [r.name for r in matched]
    if not best:
        best[rules.fallback.department] = rules.fallback
        names[rules.fallback.department] = ["fallback"]
        matched_names.append("fallback")
    first = list(best)  # departments in the order a rule first chose them
    order = sorted(first, key=lambda d: (best[d].priority.value, first.index(d)))
    tags: list[str] = []
    for rule in matched:
        tags.extend(t for t in rule.tags if t not in tags)
    return Decision(
        assignments=tuple(
            Assignment(
                department=d, priority=best[d].priority, sla_minutes=best[d].sla_minutes, rules=names[d]
            )
            for d in order
        ),
        matched_rules=tuple(matched_names),
        tags=tuple(tags),
    )
