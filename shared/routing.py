"""Routing rules: which departments get a classified mention, with what priority and SLA.

Serves the router and (later) the API's dry run. Pure: no I/O beyond loading the YAML file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from shared.errors import ConfigError
from shared.events import Assignment, Classification, Department, Mention, Priority, Sentiment
from shared.settings import DEPARTMENTS

_CONDITIONS = {
    "departments_any",
    "topics_any",
    "topics_all",
    "sentiment_in",
    "min_score",
    "max_score",
    "kind_in",
    "min_influence",
}


@dataclass(frozen=True)
class Target:
    department: Department
    priority: Priority
    sla_minutes: int


@dataclass(frozen=True)
class Rule:
    name: str
    targets: tuple[Target, ...]
    topics_any: frozenset[str] = frozenset()
    topics_all: frozenset[str] = frozenset()
    sentiment_in: frozenset[str] = frozenset()
    min_score: float | None = None
    max_score: float | None = None
    kind_in: frozenset[str] = frozenset()
    min_influence: int | None = None
    # departments a learned engine suggested (Classification.departments)
    departments_any: frozenset[str] = frozenset()
    stop: bool = False

    def matches(self, mention: Mention, classification: Classification, topics: frozenset[str]) -> bool:
        if self.topics_any and not (self.topics_any & topics):
            return False
        if self.topics_all and not self.topics_all <= topics:
            return False
        if self.departments_any and not any(
            d.name.value in self.departments_any for d in classification.departments
        ):
            return False
        if self.sentiment_in and classification.sentiment.value not in self.sentiment_in:
            return False
        if self.min_score is not None and classification.sentiment_score < self.min_score:
            return False
        if self.max_score is not None and classification.sentiment_score > self.max_score:
            return False
        if self.kind_in and mention.kind.value not in self.kind_in:
            return False
        return self.min_influence is None or mention.influence >= self.min_influence


@dataclass(frozen=True)
class Decision:
    assignments: tuple[Assignment, ...]
    matched_rules: tuple[str, ...]

    @property
    def departments(self) -> list[Department]:
        return [a.department for a in self.assignments]


class RuleSet:
    def __init__(self, rules: list[Rule], fallback: Target, version: str = "1") -> None:
        self.rules = rules
        self.fallback = fallback
        self.version = version

    def evaluate(self, mention: Mention, classification: Classification) -> Decision:
        """The assignments for a mention: one per department, the most urgent target winning, primary
        (highest priority, then earliest rule) first."""
        topics = frozenset(t.name for t in classification.topics)
        chosen: dict[Department, tuple[Target, list[str]]] = {}
        matched: list[str] = []
        for rule in self.rules:
            if not rule.matches(mention, classification, topics):
                continue
            matched.append(rule.name)
            for target in rule.targets:
                current = chosen.get(target.department)
                if current is None:
                    chosen[target.department] = (target, [rule.name])
                    continue
                best, names = current
                names.append(rule.name)
                if (target.priority.value, target.sla_minutes) < (best.priority.value, best.sla_minutes):
                    chosen[target.department] = (target, names)
            if rule.stop:
                break
        if not chosen:
            chosen[self.fallback.department] = (self.fallback, ["fallback"])
            matched.append("fallback")
        order = sorted(chosen.items(), key=lambda kv: kv[1][0].priority.value)
        return Decision(
            assignments=tuple(
                Assignment(
                    department=dept,
                    priority=target.priority,
                    sla_minutes=target.sla_minutes,
                    rules=names,
                )
                for dept, (target, names) in order
            ),
            matched_rules=tuple(matched),
        )

    @classmethod
    def from_file(cls, path: Path, *, known_topics: Iterable[str] | None = None) -> RuleSet:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read routing rules {path}: {exc}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"routing rules {path} are not valid YAML: {exc}") from exc
        return cls.from_dict(data, known_topics=known_topics, where=str(path))

    @classmethod
    def from_dict(
        cls, data: Any, *, known_topics: Iterable[str] | None = None, where: str = "rules"
    ) -> RuleSet:
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping with `rules` and `fallback`")
        topics = set(known_topics) if known_topics is not None else None
        fallback = _target(data.get("fallback"), f"{where}: fallback")
        raw_rules = data.get("rules", [])
        if not isinstance(raw_rules, list):
            raise ConfigError(f"{where}: `rules` must be a list")
        rules: list[Rule] = []
        names: set[str] = set()
        for i, raw in enumerate(raw_rules):
            at = f"{where}: rule #{i + 1}"
            if not isinstance(raw, dict):
                raise ConfigError(f"{at}: expected a mapping")
            name = raw.get("name")
            if not isinstance(name, str) or not name:
                raise ConfigError(f"{at}: needs a `name`")
            at = f"{where}: rule {name!r}"
            if name in names:
                raise ConfigError(f"{at}: the name is used twice")
            names.add(name)
            when = raw.get("when", {})
            if not isinstance(when, dict):
                raise ConfigError(f"{at}: `when` must be a mapping")
            unknown = set(when) - _CONDITIONS
            if unknown:
                raise ConfigError(
                    f"{at}: unknown condition(s) {sorted(unknown)}; known: {sorted(_CONDITIONS)}"
                )
            route = raw.get("route")
            if not isinstance(route, list) or not route:
                raise ConfigError(f"{at}: `route` must list at least one department")
            rule = Rule(
                name=name,
                targets=tuple(_target(t, f"{at}: route #{j + 1}") for j, t in enumerate(route)),
                topics_any=_names(when, "topics_any", at),
                topics_all=_names(when, "topics_all", at),
                sentiment_in=_names(when, "sentiment_in", at),
                min_score=_number(when, "min_score", at),
                max_score=_number(when, "max_score", at),
                kind_in=_names(when, "kind_in", at),
                min_influence=_int(when, "min_influence", at),
                departments_any=_names(when, "departments_any", at),
                stop=_bool(raw, "stop", at),
            )
            _validate(rule, topics, at)
            rules.append(rule)
        return cls(rules, fallback, version=str(data.get("version", "1")))


def _validate(rule: Rule, topics: set[str] | None, at: str) -> None:
    if topics is not None:
        unknown = (rule.topics_any | rule.topics_all) - topics
        if unknown:
            raise ConfigError(f"{at}: unknown topic(s) {sorted(unknown)}")
    bad = rule.departments_any - set(DEPARTMENTS)
    if bad:
        raise ConfigError(f"{at}: unknown department(s) {sorted(bad)}")
    bad = rule.sentiment_in - {s.value for s in Sentiment}
    if bad:
        raise ConfigError(f"{at}: unknown sentiment(s) {sorted(bad)}")
    bad = rule.kind_in - {"post", "comment"}
    if bad:
        raise ConfigError(f"{at}: unknown kind(s) {sorted(bad)}")
    if rule.min_score is not None and rule.max_score is not None and rule.min_score > rule.max_score:
        raise ConfigError(f"{at}: can never match (min_score {rule.min_score} > max_score {rule.max_score})")
    if rule.min_influence is not None and not 1 <= rule.min_influence <= 3:
        raise ConfigError(f"{at}: min_influence must be 1..3")


def _target(raw: Any, at: str) -> Target:
    if not isinstance(raw, dict):
        raise ConfigError(f"{at}: expected {{department, priority, sla_minutes}}")
    dept = raw.get("department")
    if dept not in DEPARTMENTS:
        raise ConfigError(f"{at}: department {dept!r} is not one of {', '.join(DEPARTMENTS)}")
    priority = raw.get("priority", "P3")
    if priority not in {p.value for p in Priority}:
        raise ConfigError(f"{at}: priority {priority!r} is not one of P1..P4")
    sla = raw.get("sla_minutes", 1440)
    if isinstance(sla, bool) or not isinstance(sla, int) or sla < 1:
        raise ConfigError(f"{at}: sla_minutes must be a positive whole number")
    return Target(department=Department(dept), priority=Priority(priority), sla_minutes=sla)


def _names(when: dict[str, Any], key: str, at: str) -> frozenset[str]:
    value = when.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{at}: `{key}` must be a list of names")
    return frozenset(value)


def _number(when: dict[str, Any], key: str, at: str) -> float | None:
    value = when.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not -1 <= value <= 1:
        raise ConfigError(f"{at}: `{key}` must be a number in [-1, 1]")
    return float(value)


def _int(when: dict[str, Any], key: str, at: str) -> int | None:
    value = when.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{at}: `{key}` must be a whole number")
    return value


def _bool(raw: dict[str, Any], key: str, at: str) -> bool:
    value = raw.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{at}: `{key}` must be true or false")
    return value
