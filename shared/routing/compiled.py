"""The compiled evaluator: the rule set as bitmasks (one bit per rule), a mention's candidates the AND of
a few lookups; see the package docstring."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence

from shared.events import (
    Classification,
    Mention,
)
from shared.routing.model import Rule, _haystack
from shared.routing.text import _Query, _Term, _Text


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
