"""Routing rules: which departments get a classified mention, with what priority and SLA, and which tags.

Serves the router (every mention) and the API (validation of edited rule sets, dry runs). Pure: no I/O
beyond reading a YAML file.

A rule set is an ordered list of rules and a fallback target. Each rule has conditions (`when`, all must
hold) and actions: `route` (departments with a priority and an SLA), `tags`, and `stop` (end the evaluation
when this rule matches). A mention no rule routes goes to the fallback. `RuleSet.to_dict()` is the canonical
form `RuleSet.from_dict()` accepts; `from_dict` refuses an invalid set with a `RuleError` that names the rule.

Speed: the router evaluates every mention against every rule, so the set is compiled once into bitmasks
(one bit per rule, a Python int): per condition value, the rules that accept it (topic, sentiment, intent,
kind, language, source, author, suggested department) and per numeric condition sorted thresholds with
cumulative masks (score, urgency, influence). A mention's candidates are the AND of a few dictionary
lookups and bisections; only the rules with text conditions (`keywords_any`, `text_query`) that are still
candidates, before the first certain `stop`, look at the text. `Rule.check` is the plain per-rule
definition of every condition; it explains dry runs, and the tests hold the compiled evaluator to a
straightforward loop.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from shared.errors import ConfigError
from shared.events import (
    Assignment,
    Classification,
    Department,
    Intent,
    Mention,
    MentionKind,
    Priority,
    Sentiment,
)
from shared.filters import FilterSyntaxError, KeywordFilter
from shared.settings import DEPARTMENTS

# The conditions, in their canonical order (of `when` in to_dict() and of the explanations).
CONDITIONS: tuple[str, ...] = (
    "topics_any",
    "topics_all",
    "topics_none",
    "sentiment_in",
    "min_score",
    "max_score",
    "intent_in",
    "min_urgency",
    "max_urgency",
    "language_in",
    "kind_in",
    "source_in",
    "min_influence",
    "max_influence",
    "author_in",
    "keywords_any",
    "text_query",
    "departments_any",
    "departments_none",
)
_LIST_CONDITIONS = frozenset(CONDITIONS) - {
    "min_score",
    "max_score",
    "min_urgency",
    "max_urgency",
    "min_influence",
    "max_influence",
    "text_query",
}
_RANGES: dict[str, tuple[str, str, float, float]] = {
    # condition pair: (low key, high key, smallest, largest allowed)
    "score": ("min_score", "max_score", -1.0, 1.0),
    "urgency": ("min_urgency", "max_urgency", 0.0, 1.0),
    "influence": ("min_influence", "max_influence", 1, 3),
}
_RULE_KEYS = ("name", "description", "when", "route", "tags", "stop")
_TOP_KEYS = ("version", "description", "fallback", "rules")
_TARGET_KEYS = ("department", "priority", "sla_minutes")
FALLBACK = "fallback"  # the name a decision gives the fallback in `matched_rules` and `Assignment.rules`

_LANGUAGE = re.compile(r"[a-z]{2}|und")
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}")
_MAX_NAME = 100
_MAX_TEXT = 200
_MAX_DESCRIPTION = 1000


class RuleError(ConfigError):
    """A rule set refused because of one rule: `index` (1-based, in the order given) and `rule` (its name,
    when it has one) say which, `field` the part of it (`when.topics_any`, `route[2].priority`, ...)."""

    def __init__(self, where: str, index: int, rule: str | None, reason: str, *, field: str | None = None):
        self.where = where
        self.index = index
        self.rule = rule
        self.reason = reason
        self.field = field
        named = f" {rule!r}" if rule else ""
        super().__init__(f"{where}: rule #{index}{named}: {reason}")

    def as_dict(self) -> dict[str, Any]:
        """The error as a JSON-ready dict, for an API's 422 answer."""
        return {
            "message": str(self),
            "rule_index": self.index,
            "rule": self.rule,
            "field": self.field,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Target:
    department: Department
    priority: Priority
    sla_minutes: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "department": self.department.value,
            "priority": self.priority.value,
            "sla_minutes": self.sla_minutes,
        }


@dataclass(frozen=True)
class RuleMatch:
    """One matched rule of a decision, for a dry run: `index` is 1-based as in error messages, `conditions`
    the conditions that held as the mention met them (e.g. "topics_any: security")."""

    index: int
    name: str
    conditions: tuple[str, ...]
    targets: tuple[Target, ...]
    tags: tuple[str, ...]
    stop: bool


@dataclass(frozen=True)
class Decision:
    """What the rules decided for one mention. `assignments`: one per department, primary first.
    `trace` is filled only when asked for (`RuleSet.evaluate(..., explain=True)`).

    Decisions are shared between mentions that matched the same rules: treat them as read-only."""

    assignments: tuple[Assignment, ...]
    matched_rules: tuple[str, ...]
    tags: tuple[str, ...] = ()
    trace: tuple[RuleMatch, ...] = ()

    @property
    def departments(self) -> list[Department]:
        return [a.department for a in self.assignments]

    @property
    def fallback(self) -> bool:
        """True when no rule routed the mention and the fallback decided."""
        return self.matched_rules == (FALLBACK,)


@dataclass(frozen=True)
class _Facts:
    """What the conditions look at, read once from a mention and its classification."""

    topics: frozenset[str]
    sentiment: str
    score: float
    intent: str
    urgency: float
    language: str
    kind: str
    source_id: str
    influence: int
    author: str  # stripped and casefolded
    departments: frozenset[str]
    haystack: str  # title, a newline, text

    @classmethod
    def of(cls, mention: Mention, classification: Classification) -> _Facts:
        c = classification
        return cls(
            topics=frozenset(t.name for t in c.topics),
            sentiment=c.sentiment.value,
            score=c.sentiment_score,
            intent=c.intent.value,
            urgency=c.urgency,
            language=c.language,
            kind=mention.kind.value,
            source_id=mention.source_id,
            influence=mention.influence,
            author=mention.author.strip().casefold(),
            departments=frozenset(d.name.value for d in c.departments),
            haystack=_haystack(mention),
        )


def _haystack(mention: Mention) -> str:
    return f"{mention.title}\n{mention.text}"


@dataclass(frozen=True)
class Rule:
    """One rule. A condition left empty (or None) is not a condition; `from_dict` refuses explicit empties."""

    name: str
    targets: tuple[Target, ...]
    topics_any: tuple[str, ...] = ()
    topics_all: tuple[str, ...] = ()
    topics_none: tuple[str, ...] = ()
    sentiment_in: tuple[str, ...] = ()
    min_score: float | None = None
    max_score: float | None = None
    intent_in: tuple[str, ...] = ()
    min_urgency: float | None = None
    max_urgency: float | None = None
    language_in: tuple[str, ...] = ()
    kind_in: tuple[str, ...] = ()
    source_in: tuple[str, ...] = ()
    min_influence: int | None = None
    max_influence: int | None = None
    # exact author names, compared stripped and casefolded
    author_in: tuple[str, ...] = ()
    # words or phrases, case-insensitive, on word boundaries, in the title and text
    keywords_any: tuple[str, ...] = ()
    # a source-filter query (shared.filters syntax) on the title and text
    text_query: str | None = None
    # departments a learned engine suggested (Classification.departments)
    departments_any: tuple[str, ...] = ()
    # departments it did not suggest: with all five, "the classifier suggested nothing" (always so
    # with the rule engine), which lets keyword rules decide only where the model has no opinion
    departments_none: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    stop: bool = False
    description: str = ""
    _keyword_terms: tuple[_Term, ...] = field(default=(), init=False, repr=False, compare=False)
    _query: _Query | None = field(default=None, init=False, repr=False, compare=False)
    # (department, how urgent, target) per target: what combining the decisions compares
    _routes: tuple[tuple[Department, tuple[str, int], Target], ...] = field(
        default=(), init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        # Built once: the terms the keyword condition looks for, the parsed query, the targets' ranks.
        object.__setattr__(self, "_keyword_terms", tuple(_Term.of(k) for k in self.keywords_any))
        object.__setattr__(
            self,
            "_routes",
            tuple((t.department, (t.priority.value, t.sla_minutes), t) for t in self.targets),
        )
        if self.text_query is not None:
            object.__setattr__(self, "_query", _Query.of(self.text_query))

    def when(self) -> dict[str, Any]:
        """The conditions given, in canonical form and order."""
        out: dict[str, Any] = {}
        for key in CONDITIONS:
            value = getattr(self, key)
            if value is None or value == ():
                continue
            out[key] = list(value) if isinstance(value, tuple) else value
        return out

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        out["when"] = self.when()
        out["route"] = [t.to_dict() for t in self.targets]
        out["tags"] = list(self.tags)
        out["stop"] = self.stop
        return out

    def check(self, mention: Mention, classification: Classification) -> tuple[str, ...] | None:
        """The conditions that hold, as readable strings, or None when one does not: the plain definition
        of every condition (the compiled evaluator must agree with it)."""
        return self._check(_Facts.of(mention, classification))

    def _check(self, f: _Facts) -> tuple[str, ...] | None:
        held: list[str] = []
        if self.topics_any:
            hit = [t for t in self.topics_any if t in f.topics]
            if not hit:
                return None
            held.append(f"topics_any: {', '.join(hit)}")
        if self.topics_all:
            if not all(t in f.topics for t in self.topics_all):
                return None
            held.append(f"topics_all: {', '.join(self.topics_all)}")
        if self.topics_none:
            if any(t in f.topics for t in self.topics_none):
                return None
            held.append(f"topics_none: none of {', '.join(self.topics_none)}")
        if self.sentiment_in:
            if f.sentiment not in self.sentiment_in:
                return None
            held.append(f"sentiment_in: {f.sentiment}")
        if not _range_holds(self, "score", f.score, held):
            return None
        if self.intent_in:
            if f.intent not in self.intent_in:
                return None
            held.append(f"intent_in: {f.intent}")
        if not _range_holds(self, "urgency", f.urgency, held):
            return None
        if self.language_in:
            if f.language not in self.language_in:
                return None
            held.append(f"language_in: {f.language}")
        if self.kind_in:
            if f.kind not in self.kind_in:
                return None
            held.append(f"kind_in: {f.kind}")
        if self.source_in:
            if f.source_id not in self.source_in:
                return None
            held.append(f"source_in: {f.source_id}")
        if not _range_holds(self, "influence", f.influence, held):
            return None
        if self.author_in:
            names = [a for a in self.author_in if a.casefold() == f.author]
            if not names:
                return None
            held.append(f"author_in: {names[0]}")
        if self.keywords_any:
            lowered = f.haystack.lower()
            found = [
                k
                for k, term in zip(self.keywords_any, self._keyword_terms, strict=True)
                if term.search(lowered)
            ]
            if not found:
                return None
            held.append(f"keywords_any: {', '.join(found)}")
        if self._query is not None:
            if not self._query.holds(_Text(f.haystack, self._query.vocabulary, self._query.ascii_vocabulary)):
                return None
            held.append(f"text_query: {self.text_query}")
        if self.departments_any:
            hit = [d for d in self.departments_any if d in f.departments]
            if not hit:
                return None
            held.append(f"departments_any: {', '.join(hit)} (suggested)")
        if self.departments_none:
            if any(d in f.departments for d in self.departments_none):
                return None
            held.append(f"departments_none: none of {', '.join(self.departments_none)} suggested")
        return tuple(held) if held else ("always (no conditions)",)


def _range_holds(rule: Rule, which: str, value: float, held: list[str]) -> bool:
    low_key, high_key, _, _ = _RANGES[which]
    low, high = getattr(rule, low_key), getattr(rule, high_key)
    if low is not None:
        if value < low:
            return False
        held.append(f"{low_key}: {which} {value:g} >= {low:g}")
    if high is not None:
        if value > high:
            return False
        held.append(f"{high_key}: {which} {value:g} <= {high:g}")
    return True


def _trace(rule: Rule, i: int, facts: _Facts) -> RuleMatch:
    held = rule._check(facts)
    return RuleMatch(
        index=i + 1,
        name=rule.name,
        conditions=held if held is not None else ("(the compiled and the plain evaluation disagree)",),
        targets=rule.targets,
        tags=rule.tags,
        stop=rule.stop,
    )


class RuleSet:
    """An ordered, validated, compiled rule set and its fallback target. Immutable once built."""

    def __init__(
        self, rules: Sequence[Rule], fallback: Target, version: str = "1", *, description: str = ""
    ) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self.fallback = fallback
        self.version = version
        self.description = description
        self._compiled = _Compiled(self.rules)
        # Decisions per set of matched rules, and assignments per (target, rules that chose it): many
        # mentions match the same rules, and building the pydantic models is most of a decision's cost.
        self._decisions: dict[int, Decision] = {}
        self._assignments: dict[tuple[tuple[str, int], Department, tuple[str, ...]], Assignment] = {}

    def __len__(self) -> int:
        return len(self.rules)

    def evaluate(
        self, mention: Mention, classification: Classification, *, explain: bool = False
    ) -> Decision:
        """The decision for a mention: one assignment per department, the most urgent target winning,
        primary (highest priority, then earliest rule) first; the tags of the matched rules; and with
        `explain`, the matched rules with the conditions that held."""
        matched = self._compiled.match(mention, classification)
        if explain:
            return self._decide(matched, _Facts.of(mention, classification))
        decision = self._decisions.get(matched)
        if decision is None:
            if len(self._decisions) >= 4096:  # a bound, should the rules combine in very many ways
                self._decisions.clear()
            decision = self._decisions[matched] = self._decide(matched, None)
        return decision

    def _decide(self, matched: int, facts: _Facts | None) -> Decision:
        # per department: [rank of the best target, the best target, the rules that chose the department]
        chosen: dict[Department, list[Any]] = {}
        names: list[str] = []
        tags: dict[str, None] = {}
        trace: list[RuleMatch] = []
        rules = self.rules
        while matched:
            low = matched & -matched
            matched ^= low
            rule = rules[low.bit_length() - 1]
            name = rule.name
            names.append(name)
            if rule.tags:
                tags.update(dict.fromkeys(rule.tags))
            for department, rank, target in rule._routes:
                current = chosen.get(department)
                if current is None:
                    chosen[department] = [rank, target, [name]]
                else:
                    current[2].append(name)
                    if rank < current[0]:  # more urgent: a lower priority number, then a shorter SLA
                        current[0], current[1] = rank, target
            if facts is not None:
                trace.append(_trace(rule, low.bit_length() - 1, facts))
        if not chosen:
            fallback = self.fallback
            chosen[fallback.department] = [
                (fallback.priority.value, fallback.sla_minutes),
                fallback,
                [FALLBACK],
            ]
            names.append(FALLBACK)
        # Primary first: by priority, then (sorted is stable) the department a rule chose first.
        order = sorted(chosen.values(), key=lambda c: c[0][0])
        if len(self._assignments) >= 4096:
            self._assignments.clear()
        assignments: list[Assignment] = []
        for rank, target, routed_by in order:
            key = (rank, target.department, tuple(routed_by))
            assignment = self._assignments.get(key)
            if assignment is None:
                assignment = self._assignments[key] = Assignment(
                    department=target.department,
                    priority=target.priority,
                    sla_minutes=target.sla_minutes,
                    rules=routed_by,
                )
            assignments.append(assignment)
        return Decision(
            assignments=tuple(assignments),
            matched_rules=tuple(names),
            tags=tuple(tags),
            trace=tuple(trace),
        )

    def to_dict(self) -> dict[str, Any]:
        """The canonical form: what from_dict accepts, and gives back unchanged (JSON-ready)."""
        out: dict[str, Any] = {"version": self.version}
        if self.description:
            out["description"] = self.description
        out["fallback"] = self.fallback.to_dict()
        out["rules"] = [r.to_dict() for r in self.rules]
        return out

    @classmethod
    def from_file(cls, path: Path, *, known_topics: Iterable[str] | None = None) -> RuleSet:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read routing rules {path}: {exc}") from exc
        return cls.from_yaml(text, known_topics=known_topics, where=str(path))

    @classmethod
    def from_yaml(
        cls, text: str, *, known_topics: Iterable[str] | None = None, where: str = "rules"
    ) -> RuleSet:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"routing rules {where} are not valid YAML: {exc}") from exc
        return cls.from_dict(data, known_topics=known_topics, where=where)

    @classmethod
    def from_dict(
        cls, data: Any, *, known_topics: Iterable[str] | None = None, where: str = "rules"
    ) -> RuleSet:
        """Validate and compile. ConfigError for the set as a whole, RuleError naming the rule otherwise.
        With `known_topics`, a topic no taxonomy defines is refused."""
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping with `rules` and `fallback`")
        unknown = [k for k in data if k not in _TOP_KEYS]
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) {sorted(map(str, unknown))}; known: {list(_TOP_KEYS)}"
            )
        topics = frozenset(known_topics) if known_topics is not None else None
        fallback = _target(data.get("fallback"), f"{where}: fallback", lambda reason, _: ConfigError(reason))
        version = data.get("version", "1")
        if isinstance(version, bool) or not isinstance(version, int | str) or not str(version).strip():
            raise ConfigError(f"{where}: `version` must be a number or a non-empty string")
        description = data.get("description", "")
        if not isinstance(description, str) or len(description) > _MAX_DESCRIPTION:
            raise ConfigError(
                f"{where}: `description` must be a string of at most {_MAX_DESCRIPTION} characters"
            )
        raw_rules = data.get("rules", [])
        if not isinstance(raw_rules, list):
            raise ConfigError(f"{where}: `rules` must be a list")
        rules: list[Rule] = []
        indexes: dict[str, int] = {}
        for i, raw in enumerate(raw_rules, start=1):
            rule = _parse_rule(raw, i, where, topics)
            if rule.name in indexes:
                raise RuleError(
                    where,
                    i,
                    rule.name,
                    f"the name is used twice (also rule #{indexes[rule.name]})",
                    field="name",
                )
            indexes[rule.name] = i
            _check_reachable(rule, i, rules, where)
            rules.append(rule)
        return cls(rules, fallback, version=str(version).strip(), description=description)


# --- parsing and validation ---------------------------------------------------------------------


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


# --- text conditions ----------------------------------------------------------------------------

# ASCII text folded for splitting into words by bytes: letters lowercased, digits and `_` kept, every
# other character a space (exactly the regex `\w` / `\W` split, for ASCII).
_FOLD = bytes(
    (ord(chr(i).lower()) if chr(i).isalnum() or i == ord("_") else 0x20) if i < 128 else i for i in range(256)
)
_WORD_RUN = re.compile(r"\w+")
# Non-word characters common in English text, in UTF-8: curly quotes, en and em dashes, bullet, ellipsis,
# primes (U+2013..U+2033); no-break space and guillemets (U+00A0, U+00AB, U+00BB).
_PUNCTUATION = (
    re.compile(rb"\xe2\x80[\x93\x94\x98\x99\x9c\x9d\xa2\xa6\xb2\xb3]"),
    re.compile(rb"\xc2[\xa0\xab\xbb]"),
)


@dataclass(frozen=True)
class _Term:
    """A keyword or phrase as the text search sees it: lowercased, single spaces. It matches on whole
    words: the characters before and after a match are not word characters (regex `\\w`)."""

    text: str
    words: frozenset[str]  # its runs of word characters: all are words of a text it occurs in
    simple: bool  # one word and nothing else: it occurs exactly when the text has that word
    # literal-first, so that the regex engine skips ahead fast; `search` checks the boundary before
    pattern: re.Pattern[str]

    @classmethod
    def of(cls, keyword: str) -> _Term:
        text = " ".join(keyword.lower().split())
        words = _WORD_RUN.findall(text)
        pattern = re.compile(r"\s+".join(re.escape(w) for w in text.split()) + r"(?!\w)")
        return cls(text=text, words=frozenset(words), simple=words == [text], pattern=pattern)

    def search(self, lowered: str) -> bool:
        pos = 0
        while (m := self.pattern.search(lowered, pos)) is not None:
            start = m.start()
            if start == 0 or not _is_word(lowered[start - 1]):
                return True
            pos = start + 1
        return False


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


class _Text:
    """A mention's title and text, read once per evaluation: which of the words the rule set looks for
    it contains (one split and one set intersection in C), and its lowercase for phrases."""

    __slots__ = ("haystack", "lowered", "words")

    def __init__(self, haystack: str, vocabulary: frozenset[str], ascii_vocabulary: frozenset[bytes]) -> None:
        self.haystack = haystack
        self.lowered: str | None = None
        self.words: AbstractSet[str]
        if haystack.isascii():
            data = haystack.encode("ascii")
        else:
            # Typographic punctuation (curly quotes, dashes, ellipses; blog software writes them for
            # plain ones) is not part of any word: a space in its place leaves the words as they were,
            # and most such texts are then ASCII, for the fast path.
            data = haystack.encode("utf-8")
            for marks in _PUNCTUATION:
                data = marks.sub(b" ", data)
        if data.isascii():
            folded = data.translate(_FOLD)
            self.words = {w.decode("ascii") for w in ascii_vocabulary.intersection(folded.split())}
        else:
            self.lowered = haystack.lower()
            self.words = vocabulary.intersection(_WORD_RUN.findall(self.lowered))

    def has(self, term: _Term) -> bool:
        if term.simple:
            return term.text in self.words
        if not term.words <= self.words:
            return False
        if self.lowered is None:
            self.lowered = self.haystack.lower()
        return term.search(self.lowered)


@dataclass(frozen=True)
class _Query:
    """A rule's text_query over the rule set's terms: every group has a term present, no exclusion is.
    A group's one-word terms are a set (one disjointness test), its phrases are searched."""

    groups: tuple[tuple[frozenset[str], tuple[_Term, ...]], ...]
    excluded_words: frozenset[str]
    excluded_phrases: tuple[_Term, ...]
    terms: tuple[_Term, ...]
    fallback: KeywordFilter | None  # a query whose terms could not be read back: its own matcher
    vocabulary: frozenset[str] = frozenset()  # the words of its terms
    ascii_vocabulary: frozenset[bytes] = frozenset()

    @classmethod
    def of(cls, query: str) -> _Query:
        parsed = KeywordFilter.parse(query)
        groups = [[_filter_term(rx) for rx in g] for g in parsed.groups]
        exclusions = [_filter_term(rx) for rx in parsed.exclusions]
        if any(t is None for g in groups for t in g) or any(t is None for t in exclusions):
            return cls(groups=(), excluded_words=frozenset(), excluded_phrases=(), terms=(), fallback=parsed)
        group_terms = [[_Term.of(t) for t in g if t is not None] for g in groups]
        excluded = [_Term.of(t) for t in exclusions if t is not None]
        vocabulary = frozenset(w for t in (*(t for g in group_terms for t in g), *excluded) for w in t.words)
        return cls(
            groups=tuple(
                (frozenset(t.text for t in g if t.simple), tuple(t for t in g if not t.simple))
                for g in group_terms
            ),
            excluded_words=frozenset(t.text for t in excluded if t.simple),
            excluded_phrases=tuple(t for t in excluded if not t.simple),
            terms=(*(t for g in group_terms for t in g), *excluded),
            fallback=None,
            vocabulary=vocabulary,
            ascii_vocabulary=frozenset(w.encode() for w in vocabulary if w.isascii()),
        )

    def holds(self, text: _Text) -> bool:
        if self.fallback is not None:
            return self.fallback.matches(text.haystack)
        words = text.words
        if not self.excluded_words.isdisjoint(words):
            return False
        if self.excluded_phrases and any(text.has(t) for t in self.excluded_phrases):
            return False
        for group_words, phrases in self.groups:
            if group_words.isdisjoint(words) and not (phrases and any(text.has(t) for t in phrases)):
                return False
        return True


_FILTER_PREFIX, _FILTER_SUFFIX = r"(?<!\w)", r"(?!\w)"


def _filter_term(rx: re.Pattern[str]) -> str | None:
    """The words a shared.filters pattern matches, or None if the pattern is not of the expected shape."""
    p = rx.pattern
    if not (p.startswith(_FILTER_PREFIX) and p.endswith(_FILTER_SUFFIX)):
        return None
    words = [re.sub(r"\\(.)", r"\1", w) for w in p[len(_FILTER_PREFIX) : -len(_FILTER_SUFFIX)].split(r"\s+")]
    rebuilt = _FILTER_PREFIX + r"\s+".join(re.escape(w) for w in words) + _FILTER_SUFFIX
    return " ".join(words) if rebuilt == p and all(words) else None


# --- the compiled evaluator ---------------------------------------------------------------------


class _Values:
    """A condition on one value (sentiment, intent, kind, ...): per value, the rules it lets through."""

    def __init__(self, rules: Sequence[Rule], accepted: Callable[[Rule], Iterable[str]]) -> None:
        self.free = 0  # rules without this condition
        self.by_value: dict[str, int] = {}
        constrained = 0
        for i, rule in enumerate(rules):
            values = list(accepted(rule))
            if not values:
                self.free |= 1 << i
                continue
            constrained |= 1 << i
            for v in values:
                self.by_value[v] = self.by_value.get(v, 0) | 1 << i
        self.used = bool(constrained)
        self.by_value = {v: bits | self.free for v, bits in self.by_value.items()}


class _Range:
    """`min_x`/`max_x` conditions: sorted thresholds with cumulative masks, looked up by bisection."""

    def __init__(self, rules: Sequence[Rule], low_key: str, high_key: str, all_rules: int) -> None:
        lows: dict[float, int] = {}
        highs: dict[float, int] = {}
        for i, rule in enumerate(rules):
            low, high = getattr(rule, low_key), getattr(rule, high_key)
            if low is not None:
                lows[low] = lows.get(low, 0) | 1 << i
            if high is not None:
                highs[high] = highs.get(high, 0) | 1 << i
        self.used = bool(lows or highs)
        self.lows = sorted(lows)
        self.low_free = all_rules & ~_or(lows.values())
        # low_pass[j]: the rules whose minimum is among the j smallest, i.e. <= a value above them
        self.low_pass = [self.low_free]
        for t in self.lows:
            self.low_pass.append(self.low_pass[-1] | lows[t])
        self.highs = sorted(highs)
        high_free = all_rules & ~_or(highs.values())
        # high_pass[j]: the rules whose maximum is highs[j] or above
        self.high_pass = [high_free] * (len(self.highs) + 1)
        for j in range(len(self.highs) - 1, -1, -1):
            self.high_pass[j] = self.high_pass[j + 1] | highs[self.highs[j]]

    def mask(self, value: float) -> int:
        return self.low_pass[bisect_right(self.lows, value)] & self.high_pass[bisect_left(self.highs, value)]


def _or(masks: Iterable[int]) -> int:
    out = 0
    for m in masks:
        out |= m
    return out


class _Compiled:
    def __init__(self, rules: Sequence[Rule]) -> None:
        n = len(rules)
        self.all = (1 << n) - 1
        self.stops = _or(1 << i for i, r in enumerate(rules) if r.stop)

        self.topics_used = any(r.topics_any or r.topics_all or r.topics_none for r in rules)
        self.any_free = _or(1 << i for i, r in enumerate(rules) if not r.topics_any)
        self.any_by_topic: dict[str, int] = {}
        self.all_by_topic: dict[str, int] = {}
        self.none_by_topic: dict[str, int] = {}
        for i, r in enumerate(rules):
            for table, topics in (
                (self.any_by_topic, r.topics_any),
                (self.all_by_topic, r.topics_all),
                (self.none_by_topic, r.topics_none),
            ):
                for t in topics:
                    table[t] = table.get(t, 0) | 1 << i
        self.topic_masks: dict[frozenset[str], int] = {}

        self.departments = _Values(rules, lambda r: r.departments_any)
        self.unsuggested: dict[str, int] = {}  # per department, the rules it must not be suggested for
        for i, r in enumerate(rules):
            for d in r.departments_none:
                self.unsuggested[d] = self.unsuggested.get(d, 0) | 1 << i
        self.department_masks: dict[frozenset[str], int] = {}
        self.sentiment = _Values(rules, lambda r: r.sentiment_in)
        self.intent = _Values(rules, lambda r: r.intent_in)
        self.kind = _Values(rules, lambda r: r.kind_in)
        self.language = _Values(rules, lambda r: r.language_in)
        self.source = _Values(rules, lambda r: r.source_in)
        self.author = _Values(rules, lambda r: [a.casefold() for a in r.author_in])
        self.score = _Range(rules, "min_score", "max_score", self.all)
        self.urgency = _Range(rules, "min_urgency", "max_urgency", self.all)
        self.influence = _Range(rules, "min_influence", "max_influence", self.all)

        # Text conditions. The words of every keyword and query term make one vocabulary: a mention's
        # text is split once and intersected with it. A one-word keyword then needs no search at all
        # (its rules are OR-ed in per word found); a phrase or a query term is searched only when all
        # its words are present.
        self.keyword_rules = _or(1 << i for i, r in enumerate(rules) if r.keywords_any)
        self.word_rules: dict[str, int] = {}
        phrases: dict[str, tuple[_Term, int]] = {}
        self.queries: dict[int, _Query] = {}
        vocabulary: set[str] = set()
        for i, r in enumerate(rules):
            for term in r._keyword_terms:
                vocabulary.update(term.words)
                if term.simple:
                    self.word_rules[term.text] = self.word_rules.get(term.text, 0) | 1 << i
                else:
                    known, bits = phrases.get(term.text, (term, 0))
                    phrases[term.text] = (known, bits | 1 << i)
            if r._query is not None:
                query = self.queries[1 << i] = r._query
                for term in query.terms:
                    vocabulary.update(term.words)
        # A phrase is looked at only when the text has its first word (in sorted order: any would do).
        self.phrases_by_word: dict[str, list[tuple[_Term, int]]] = {}
        for term, bits in phrases.values():
            self.phrases_by_word.setdefault(min(term.words), []).append((term, bits))
        self.query_rules = _or(self.queries)
        self.text_rules = self.keyword_rules | self.query_rules
        self.vocabulary = frozenset(vocabulary)
        self.ascii_vocabulary = frozenset(w.encode() for w in vocabulary if w.isascii())

    def _topic_mask(self, topics: frozenset[str]) -> int:
        passing = self.any_free
        failing = 0
        for t in topics:
            passing |= self.any_by_topic.get(t, 0)
            failing |= self.none_by_topic.get(t, 0)
        for t, rules in self.all_by_topic.items():
            if t not in topics:
                failing |= rules
        if len(self.topic_masks) >= 4096:
            self.topic_masks.clear()
        mask = self.topic_masks[topics] = passing & ~failing
        return mask

    def _department_mask(self, departments: frozenset[str]) -> int:
        mask = self.departments.free
        for d in departments:
            mask |= self.departments.by_value.get(d, 0)
        for d in departments:
            mask &= ~self.unsuggested.get(d, 0)
        if len(self.department_masks) >= 64:
            self.department_masks.clear()
        self.department_masks[departments] = mask
        return mask

    def match(self, mention: Mention, c: Classification) -> int:
        """The matched rules as a bitmask (bit i = rule i), after `stop`."""
        cand = self.all
        if self.topics_used:
            topics = frozenset([t.name for t in c.topics])
            mask = self.topic_masks.get(topics)
            cand &= mask if mask is not None else self._topic_mask(topics)
        if self.sentiment.used:
            cand &= self.sentiment.by_value.get(c.sentiment, self.sentiment.free)
        if self.intent.used:
            cand &= self.intent.by_value.get(c.intent, self.intent.free)
        if self.kind.used:
            cand &= self.kind.by_value.get(mention.kind, self.kind.free)
        if self.language.used:
            cand &= self.language.by_value.get(c.language, self.language.free)
        if self.source.used:
            cand &= self.source.by_value.get(mention.source_id, self.source.free)
        if not cand:
            return 0
        if self.score.used:
            cand &= self.score.mask(c.sentiment_score)
        if self.urgency.used:
            cand &= self.urgency.mask(c.urgency)
        if self.influence.used:
            cand &= self.influence.mask(mention.influence)
        if self.author.used:
            cand &= self.author.by_value.get(mention.author.strip().casefold(), self.author.free)
        if self.departments.used or self.unsuggested:
            departments = frozenset([d.name for d in c.departments])
            mask = self.department_masks.get(departments)
            cand &= mask if mask is not None else self._department_mask(departments)
        pending = cand & self.text_rules
        if pending:
            cand ^= pending
            # Text rules after a stop that certainly applies are never evaluated.
            stops = cand & self.stops
            if stops:
                pending &= (stops & -stops) - 1
            if pending:
                cand |= self._text_matches(pending, mention)
        stops = cand & self.stops
        if stops:
            cand &= ((stops & -stops) << 1) - 1
        return cand

    def _text_matches(self, pending: int, mention: Mention) -> int:
        """Which of the `pending` rules' text conditions hold."""
        text = _Text(_haystack(mention), self.vocabulary, self.ascii_vocabulary)
        holding = pending
        keyword_rules = pending & self.keyword_rules
        if keyword_rules:
            hit = 0
            word_rules, phrases_by_word = self.word_rules, self.phrases_by_word
            for word in text.words:
                hit |= word_rules.get(word, 0)
                for term, rules in phrases_by_word.get(word, ()):
                    if rules & keyword_rules & ~hit and text.has(term):
                        hit |= rules
            holding &= hit | ~keyword_rules
        queries = holding & self.query_rules
        while queries:
            low = queries & -queries
            queries ^= low
            if not self.queries[low].holds(text):
                holding ^= low
        return holding
