"""Keyword filters on sources: only entries about the company become mentions (ingest applies them,
the API validates them).

Syntax (case-insensitive, whole words):
    acme                      the word `acme`
    "acme cloud"              the phrase
    a OR b                    either (OR binds the terms next to it)
    a b                       both (terms side by side are ANDed)
    -jobs                     not `jobs` (also -"job offer")
So `"acme cloud" OR acmecloud -jobs` means (acme cloud or acmecloud) and not jobs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(r'\s*(-?)(?:"([^"]*)"|(\S+))')


class FilterSyntaxError(ValueError):
    """The query cannot be read; the message says where."""


@dataclass(frozen=True)
class KeywordFilter:
    """All `groups` must match (each group is a set of alternatives) and no `exclusions` may."""

    query: str
    groups: tuple[tuple[re.Pattern[str], ...], ...]
    exclusions: tuple[re.Pattern[str], ...]

    def matches(self, text: str) -> bool:
        if any(rx.search(text) for rx in self.exclusions):
            return False
        return all(any(rx.search(text) for rx in group) for group in self.groups)

    @classmethod
    def parse(cls, query: str) -> KeywordFilter:
        tokens: list[tuple[bool, str, bool]] = []  # (negated, text, quoted)
        pos = 0
        query = query.strip()
        while pos < len(query):
            m = _TOKEN.match(query, pos)
            if m is None or m.end() == pos:
                raise FilterSyntaxError(f"cannot read the filter at character {pos + 1}: {query[pos:]!r}")
            negated, phrase, word = m.group(1) == "-", m.group(2), m.group(3)
            if phrase is None and word is not None and word.startswith('"'):
                raise FilterSyntaxError(f"unclosed quote at character {m.start(3) + 1}")
            tokens.append((negated, phrase if phrase is not None else word, phrase is not None))
            pos = m.end()
            while pos < len(query) and query[pos].isspace():
                pos += 1
        groups: list[list[re.Pattern[str]]] = []
        exclusions: list[re.Pattern[str]] = []
        join_next = False
        for i, (negated, text, quoted) in enumerate(tokens):
            if text == "OR" and not quoted and not negated:
                if not groups or join_next or i == len(tokens) - 1:
                    raise FilterSyntaxError("OR needs a term on each side")
                join_next = True
                continue
            if not text.strip():
                raise FilterSyntaxError("empty phrase")
            rx = _pattern(text)
            if negated:
                if join_next:
                    raise FilterSyntaxError("OR cannot join an exclusion")
                exclusions.append(rx)
            elif join_next:
                groups[-1].append(rx)
                join_next = False
            else:
                groups.append([rx])
        if not groups and not exclusions:
            raise FilterSyntaxError("the filter is empty")
        return cls(query=query, groups=tuple(tuple(g) for g in groups), exclusions=tuple(exclusions))


def _pattern(text: str) -> re.Pattern[str]:
    words = [re.escape(w) for w in text.split()]
    return re.compile(r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)", re.IGNORECASE)
