"""Parsing and validation of a rule set's dict/YAML form, and the reachability check (a rule that an
earlier `stop` rule always pre-empts is refused)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from shared.events import (
    Department,
    Intent,
    MentionKind,
    Priority,
    Sentiment,
)
from shared.filters import FilterSyntaxError, KeywordFilter
from shared.routing.model import (
    _LANGUAGE,
    _LIST_CONDITIONS,
    _MAX_DESCRIPTION,
    _MAX_NAME,
    _MAX_TEXT,
    _RANGES,
    _RULE_KEYS,
    _TAG,
    _TARGET_KEYS,
    CONDITIONS,
    FALLBACK,
    Rule,
    RuleError,
    Target,
)
from shared.settings import DEPARTMENTS


def _parse_rule(raw: Any, index: int, where: str, topics: frozenset[str] | None) -> Rule:
    if not isinstance(raw, dict):
        raise RuleError(where, index, None, "expected a mapping with `name`, `when` and `route`")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise RuleError(where, index, None, "needs a `name`", field="name")
    name = name.strip()

    def fail(reason: str, at: str | None = None) -> RuleError:
        return RuleError(where, index, name, reason, field=at)

    if len(name) > _MAX_NAME:
        raise fail(f"the name is longer than {_MAX_NAME} characters", "name")
    if name == FALLBACK:
        raise fail(f"`{FALLBACK}` is reserved for the fallback target", "name")
    unknown = [k for k in raw if k not in _RULE_KEYS]
    if unknown:
        raise fail(f"unknown key(s) {sorted(map(str, unknown))}; a rule has {', '.join(_RULE_KEYS)}")
    description = raw.get("description", "")
    if not isinstance(description, str) or len(description) > _MAX_DESCRIPTION:
        raise fail(f"`description` must be a string of at most {_MAX_DESCRIPTION} characters", "description")
    when = raw.get("when", {})
    if not isinstance(when, dict):
        raise fail("`when` must be a mapping of conditions", "when")
    unknown = [k for k in when if k not in CONDITIONS]
    if unknown:
        raise fail(f"unknown condition(s) {sorted(map(str, unknown))}; known: {sorted(CONDITIONS)}", "when")
    route = raw.get("route")
    if not isinstance(route, list) or not route:
        raise fail("`route` must list at least one department", "route")
    targets = tuple(
        _target(t, f"route #{j}", lambda reason, at: fail(reason, at)) for j, t in enumerate(route, start=1)
    )
    seen: set[Department] = set()
    for j, t in enumerate(targets, start=1):
        if t.department in seen:
            raise fail(f"route #{j}: department {t.department.value!r} is routed twice", f"route[{j}]")
        seen.add(t.department)
    stop = raw.get("stop", False)
    if not isinstance(stop, bool):
        raise fail("`stop` must be true or false", "stop")
    tags = _strings(raw, "tags", fail, at="tags", allow_missing=True)
    for tag in tags:
        if not _TAG.fullmatch(tag):
            raise fail(
                f"tag {tag!r}: letters, digits and _ . : / - only, starting with a letter or digit, "
                "at most 64 characters",
                "tags",
            )

    values: dict[str, Any] = {}
    for key, value in when.items():
        at = f"when.{key}"
        if value is None:
            raise fail(f"`{key}` is empty: give it a value or remove it", at)
        if key in _LIST_CONDITIONS:
            values[key] = _condition_list(key, value, fail, at, topics)
        elif key == "text_query":
            values[key] = _query(value, fail, at)
        else:
            values[key] = _bound(key, value, fail, at)
    for low_key, high_key, _, _ in _RANGES.values():
        low, high = values.get(low_key), values.get(high_key)
        if low is not None and high is not None and low > high:
            raise fail(f"can never match ({low_key} {low:g} > {high_key} {high:g})", f"when.{low_key}")
    overlap = [t for t in values.get("topics_all", ()) if t in values.get("topics_none", ())]
    if overlap:
        raise fail(
            f"can never match (topic(s) {overlap} both in topics_all and topics_none)", "when.topics_none"
        )
    any_ = values.get("topics_any", ())
    if any_ and all(t in values.get("topics_none", ()) for t in any_):
        raise fail("can never match (every topic of topics_any is in topics_none)", "when.topics_none")
    suggested = values.get("departments_any", ())
    if suggested and all(d in values.get("departments_none", ()) for d in suggested):
        raise fail(
            "can never match (every department of departments_any is in departments_none)",
            "when.departments_none",
        )
    return Rule(name=name, targets=targets, tags=tags, stop=stop, description=description, **values)


def _target(raw: Any, at: str, fail: Callable[[str, str | None], Exception]) -> Target:
    field_at = at.replace("route #", "route[") + "]" if at.startswith("route #") else "fallback"
    if not isinstance(raw, dict):
        raise fail(f"{at}: expected {{department, priority, sla_minutes}}", field_at)
    unknown = [k for k in raw if k not in _TARGET_KEYS]
    if unknown:
        raise fail(
            f"{at}: unknown key(s) {sorted(map(str, unknown))}; known: {', '.join(_TARGET_KEYS)}", field_at
        )
    dept = raw.get("department")
    if dept not in DEPARTMENTS:
        raise fail(
            f"{at}: department {dept!r} is not one of {', '.join(DEPARTMENTS)}", f"{field_at}.department"
        )
    priority = raw.get("priority", "P3")
    if priority not in {p.value for p in Priority}:
        raise fail(f"{at}: priority {priority!r} is not one of P1..P4", f"{field_at}.priority")
    sla = raw.get("sla_minutes", 1440)
    if isinstance(sla, bool) or not isinstance(sla, int) or sla < 1:
        raise fail(f"{at}: sla_minutes must be a positive whole number", f"{field_at}.sla_minutes")
    return Target(department=Department(dept), priority=Priority(priority), sla_minutes=sla)


def _strings(
    raw: dict[str, Any],
    key: str,
    fail: Callable[[str, str | None], RuleError],
    *,
    at: str,
    allow_missing: bool = False,
) -> tuple[str, ...]:
    value = raw.get(key, [] if allow_missing else None)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise fail(f"`{key}` must be a list of strings", at)
    return tuple(dict.fromkeys(v.strip() for v in value))


_VOCABULARY: dict[str, frozenset[str]] = {
    "sentiment_in": frozenset(s.value for s in Sentiment),
    "intent_in": frozenset(i.value for i in Intent),
    "kind_in": frozenset(k.value for k in MentionKind),
    "departments_any": frozenset(DEPARTMENTS),
    "departments_none": frozenset(DEPARTMENTS),
}
_WHAT = {
    "sentiment_in": "sentiment",
    "intent_in": "intent",
    "kind_in": "kind",
    "departments_any": "department",
    "departments_none": "department",
}


def _condition_list(
    key: str,
    value: Any,
    fail: Callable[[str, str | None], RuleError],
    at: str,
    topics: frozenset[str] | None,
) -> tuple[str, ...]:
    items = _strings({key: value}, key, fail, at=at)
    if not items:
        raise fail(f"can never match (`{key}` is an empty list): list at least one value or remove it", at)
    if any(not v for v in items):
        raise fail(f"`{key}` has an empty string", at)
    if key in _VOCABULARY:
        bad = [v for v in items if v not in _VOCABULARY[key]]
        if bad:
            raise fail(f"unknown {_WHAT[key]}(s) {bad}; known: {', '.join(sorted(_VOCABULARY[key]))}", at)
    elif key.startswith("topics_"):
        if topics is not None:
            bad = [v for v in items if v not in topics]
            if bad:
                raise fail(f"unknown topic(s) {bad}", at)
    elif key == "language_in":
        bad = [v for v in items if not _LANGUAGE.fullmatch(v)]
        if bad:
            raise fail(f"language code(s) {bad}: ISO 639-1, two lowercase letters (or `und`)", at)
    elif key == "source_in":
        bad = [v for v in items if len(v) > 64]
        if bad:
            raise fail(f"source id(s) {bad} longer than 64 characters", at)
    elif key == "author_in":
        items = _first_spellings(items, str.casefold)
        if any(len(v) > _MAX_TEXT for v in items):
            raise fail(f"an author name is longer than {_MAX_TEXT} characters", at)
    elif key == "keywords_any":
        items = tuple(dict.fromkeys(" ".join(v.split()) for v in items))
        for k in items:
            if len(k) > _MAX_TEXT:
                raise fail(f"keyword {k[:40]!r}... is longer than {_MAX_TEXT} characters", at)
            if not any(ch.isalnum() or ch == "_" for ch in k):
                raise fail(f"keyword {k!r} has no letter or digit (matched on word boundaries)", at)
        items = _first_spellings(items, str.lower)
    return items


def _first_spellings(items: Iterable[str], key: Callable[[str], str]) -> tuple[str, ...]:
    """`items` without the ones equal to an earlier one under `key` (e.g. the same name in other case)."""
    first: dict[str, str] = {}
    for v in items:
        first.setdefault(key(v), v)
    return tuple(first.values())


def _query(value: Any, fail: Callable[[str, str | None], RuleError], at: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise fail("`text_query` must be a non-empty query string", at)
    if len(value) > 1000:
        raise fail("`text_query` is longer than 1000 characters", at)
    try:
        KeywordFilter.parse(value)
    except FilterSyntaxError as exc:
        raise fail(f"text_query: {exc}", at) from exc
    return value.strip()


def _bound(key: str, value: Any, fail: Callable[[str, str | None], RuleError], at: str) -> float | int:
    which = key.split("_", 1)[1]
    _, _, lo, hi = _RANGES[which]
    if which == "influence":
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail(f"`{key}` must be a whole number", at)
        if not lo <= value <= hi:
            raise fail(f"{key} must be 1..3", at)
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise fail(f"`{key}` must be a number in [{lo:g}, {hi:g}]", at)
    return float(value)


def _check_reachable(rule: Rule, index: int, earlier: Sequence[Rule], where: str) -> None:
    """Refuse a rule that an earlier `stop` rule always ends the evaluation before: one that matches
    whenever this one would (decided condition by condition, conservatively)."""
    for j, other in enumerate(earlier, start=1):
        if not other.stop or not _covers(other, rule):
            continue
        if not other.when():
            reason = f"can never match: rule #{j} {other.name!r} has no conditions and stops every evaluation"
        else:
            reason = f"can never match: rule #{j} {other.name!r} matches whenever this rule would, and stops"
        raise RuleError(where, index, rule.name, reason, field="when")


def _covers(a: Rule, b: Rule) -> bool:
    """True when every mention that matches `b` certainly matches `a` (False when it cannot be told)."""
    required = set(b.topics_all) | (set(b.topics_any) if len(b.topics_any) == 1 else set())
    if a.topics_any and not (
        (b.topics_any and set(b.topics_any) <= set(a.topics_any)) or required & set(a.topics_any)
    ):
        return False
    if a.topics_all and not set(a.topics_all) <= required:
        return False
    if a.topics_none and not set(a.topics_none) <= set(b.topics_none):
        return False
    if a.departments_none and not set(a.departments_none) <= set(b.departments_none):
        return False
    for key in ("sentiment_in", "intent_in", "language_in", "kind_in", "source_in", "departments_any"):
        mine, theirs = getattr(a, key), getattr(b, key)
        if mine and not (theirs and set(theirs) <= set(mine)):
            return False
    if a.author_in and not (
        b.author_in and {x.casefold() for x in b.author_in} <= {x.casefold() for x in a.author_in}
    ):
        return False
    if a.keywords_any and not (
        b.keywords_any and {x.lower() for x in b.keywords_any} <= {x.lower() for x in a.keywords_any}
    ):
        return False
    if a.text_query is not None and a.text_query != b.text_query:
        return False
    for low_key, high_key, _, _ in _RANGES.values():
        low_a, low_b = getattr(a, low_key), getattr(b, low_key)
        if low_a is not None and (low_b is None or low_b < low_a):
            return False
        high_a, high_b = getattr(a, high_key), getattr(b, high_key)
        if high_a is not None and (high_b is None or high_b > high_a):
            return False
    return True
