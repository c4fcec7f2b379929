"""The topic taxonomy (YAML) and its one-pass matcher."""

from __future__ import annotations

import re
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from shared.classify.matcher import PhraseMatcher, normalise_term, tokenize
from shared.errors import ConfigError
from shared.settings import DEPARTMENTS


@dataclass(frozen=True)
class Topic:
    name: str
    department: str
    terms: tuple[str, ...]
    regexes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TopicMatch:
    topic: str
    hits: tuple[str, ...]
    regex_hits: tuple[str, ...] = ()


class Taxonomy:
    """Topics with their terms, indexed so that a text is scanned once (see shared.classify.matcher)."""

    def __init__(self, topics: list[Topic], version: str = "1") -> None:
        if not topics:
            raise ConfigError("the taxonomy defines no topics")
        self.topics = {t.name: t for t in topics}
        self.version = version
        self._term_topics: dict[str, list[str]] = {}
        for topic in topics:
            for term in topic.terms:
                self._term_topics.setdefault(_norm(term), []).append(topic.name)
        # One pass over the tokens; the longest term wins at a position ("price increase" over "price").
        self._terms = PhraseMatcher(self._term_topics)
        self._regexes = [
            (topic.name, re.compile(rx, re.IGNORECASE)) for topic in topics for rx in topic.regexes
        ]

    @property
    def terms(self) -> list[str]:
        """Every term, normalised (for a matcher that scans for several vocabularies at once)."""
        return list(self._term_topics)

    def match(
        self,
        text: str,
        tokens: Sequence[str] | None = None,
        present: AbstractSet[str] | None = None,
        *,
        term_hits: Sequence[tuple[int, str]] | None = None,
    ) -> list[TopicMatch]:
        """The topics whose terms or regexes occur in `text` (`tokens`: its tokens, if already made)."""
        text = text.replace("\u2019", "'")
        hits: dict[str, list[str]] = {}
        if term_hits is None:
            term_hits = list(self._terms.find(tokenize(text) if tokens is None else tokens, present))
        for _, term in term_hits:
            for topic in self._term_topics[term]:
                found = hits.get(topic)
                if found is None:
                    hits[topic] = [term]
                elif term not in found:
                    found.append(term)
        regex_hits: dict[str, list[str]] = {}
        for topic, rx in self._regexes:
            for m in rx.finditer(text):
                value = m.group(0)
                found = hits.setdefault(topic, [])
                if value not in found:
                    found.append(value)
                regex_hits.setdefault(topic, []).append(value)
        return [
            TopicMatch(
                topic=t,
                hits=tuple(h),
                regex_hits=tuple(dict.fromkeys(regex_hits[t])) if t in regex_hits else (),
            )
            for t, h in hits.items()
        ]

    @classmethod
    def from_file(cls, path: Path) -> Taxonomy:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read taxonomy file {path}: {exc}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"taxonomy file {path} is not valid YAML: {exc}") from exc
        return cls.from_dict(data, where=str(path))

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "taxonomy") -> Taxonomy:
        if not isinstance(data, dict) or not isinstance(data.get("topics"), dict):
            raise ConfigError(f"{where}: expected a mapping with a `topics` mapping")
        topics: list[Topic] = []
        for name, spec in data["topics"].items():
            at = f"{where}: topic {name!r}"
            if not isinstance(spec, dict):
                raise ConfigError(f"{at}: expected a mapping")
            department = spec.get("department")
            if department not in DEPARTMENTS:
                raise ConfigError(f"{at}: department {department!r} is not one of {', '.join(DEPARTMENTS)}")
            terms = spec.get("terms", [])
            regexes = spec.get("regexes", [])
            if not isinstance(terms, list) or not all(isinstance(t, str | int) for t in terms):
                raise ConfigError(f"{at}: `terms` must be a list of strings")
            if any(not _norm(t) for t in terms):
                # A blank term matches the empty string between any two non-word characters (the
                # engine's "title. text" always has one), so the topic would label every mention.
                raise ConfigError(f"{at}: `terms` contains a blank term")
            if not isinstance(regexes, list) or not all(isinstance(r, str) for r in regexes):
                raise ConfigError(f"{at}: `regexes` must be a list of strings")
            for rx in regexes:
                try:
                    compiled = re.compile(rx)
                except re.error as exc:
                    raise ConfigError(f"{at}: regex {rx!r} does not compile: {exc}") from exc
                # A pattern that matches nothing at all would label every mention with this topic.
                if compiled.search("") is not None:
                    raise ConfigError(f"{at}: regex {rx!r} matches the empty string")
            if not terms and not regexes:
                raise ConfigError(f"{at}: needs at least one term or regex")
            topics.append(
                Topic(
                    name=str(name),
                    department=department,
                    terms=tuple(str(t) for t in terms),
                    regexes=tuple(regexes),
                )
            )
        return cls(topics, version=str(data.get("version", "1")))


def _norm(term: str) -> str:
    return normalise_term(term)
