"""The rule model: conditions, targets, a rule and what it decides for one mention."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from shared.errors import ConfigError
from shared.events import (
    Assignment,
    Classification,
    Department,
    Mention,
    Priority,
)
from shared.routing.text import _Query, _Term, _Text

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
