"""`RuleSet`: a validated, ordered list of rules with a fallback, compiled for evaluation."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from shared.errors import ConfigError
from shared.events import (
    Assignment,
    Classification,
    Department,
    Mention,
)
from shared.routing.compiled import _Compiled
from shared.routing.model import (
    _MAX_DESCRIPTION,
    _TOP_KEYS,
    FALLBACK,
    Decision,
    Rule,
    RuleError,
    RuleMatch,
    Target,
    _Facts,
    _trace,
)
from shared.routing.parse import _check_reachable, _parse_rule, _target


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
