"""Multi-term matching in one pass over the tokens of a text.

The text is split once into tokens (runs of word characters, and single other characters); every
term is split the same way and indexed by its first token. One left-to-right walk over the tokens
looks each token up in that index and, where a term starts there, compares the following tokens:
the longest term wins at a position ("price increase" over "price") and matching resumes after it.

A term therefore never matches inside a longer word ("pricing" is not in "repricings" or "pricing_v2")
but does between punctuation ("new-pricing", "pricing's"). The same tokens feed the sentiment scorer and
the language guess, so a text is tokenised once per classification. A regex alternation of a few
hundred terms cost about 150 µs on a 300-character text, this about a tenth of it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet

TOKEN_RE = re.compile(r"\w+|[^\w\s]")


def fold(text: str) -> str:
    """Lower case with straight apostrophes: the form tokens are compared in."""
    return text.replace("\u2019", "'").lower()


_findall = TOKEN_RE.findall


def tokenize(text: str) -> list[str]:
    """TOKEN_RE's tokens of the folded text. Most of a text is words between white space: it is split at
    white space (str.split and the regex's \\s agree on what that is), a piece that is all word characters
    (str.isalnum, as \\w bar the underscore) is one token, a word with one mark after it ("word,") two, and
    only the other pieces go through the regex: a quarter cheaper than the regex over the whole text
    (26 against 34 µs on the bench's 950-character mentions)."""
    out: list[str] = []
    append = out.append
    for piece in fold(text).split():
        if piece.isalnum():
            append(piece)
            continue
        head, last = piece[:-1], piece[-1]
        if head.isalnum() and not last.isalnum() and last != "_":
            append(head)
            append(last)
        else:
            out.extend(_findall(piece))
    return out


def normalise_term(term: object) -> str:
    """Lower case, single spaces, straight apostrophes: the form terms are stored and reported in."""
    return " ".join(str(term).lower().split()).replace("\u2019", "'")


class PhraseMatcher:
    """Finds the terms of a vocabulary in a token list, case-insensitively, on token boundaries."""

    def __init__(self, terms: Iterable[str]) -> None:
        # first token → [(the term's tokens, the term)], longest first
        index: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        for term in {normalise_term(t) for t in terms} - {""}:
            parts = tuple(tokenize(term))
            if parts:
                index.setdefault(parts[0], []).append((parts, term))
        for entries in index.values():
            entries.sort(key=lambda e: (-len(e[0]), e[1]))
        self._index = index
        self.size = sum(len(v) for v in index.values())

    def find(
        self, tokens: Sequence[str], present: AbstractSet[str] | None = None
    ) -> Iterator[tuple[int, str]]:
        """(token position, normalised term) for each match, left to right, non-overlapping.

        `present` is the set of the tokens, when the caller has it: most texts contain no term of a
        given vocabulary, and one set intersection (at C speed) says so without a walk over the tokens.
        """
        index = self._index
        starts = index.keys() & (set(tokens) if present is None else present)
        if not starts:
            return
        n = len(tokens)
        after = 0  # matches never overlap: the next one starts at or after this position
        for i in [i for i, tok in enumerate(tokens) if tok in starts]:
            if i < after:
                continue
            for parts, term in index[tokens[i]]:
                k = len(parts)
                # Most candidates fail on their second token: compare it before slicing the rest.
                if k == 1 or (
                    i + k <= n
                    and tokens[i + 1] == parts[1]
                    and (k == 2 or tuple(tokens[i + 2 : i + k]) == parts[2:])
                ):
                    yield i, term
                    after = i + k
                    break

    def finditer(self, text: str) -> Iterator[tuple[int, str]]:
        return self.find(tokenize(text))


class VocabularyMatcher:
    """Several vocabularies matched in one pass: `find(tokens)` gives, per vocabulary, what a
    PhraseMatcher of that vocabulary alone would (the longest term at a position, no overlaps within
    a vocabulary; a term of one vocabulary never hides a term of another).

    Terms are indexed by their first token and, for phrases, their second, so that a common first
    word ("i", "is", "how") costs one more dict lookup, not a comparison with every phrase it starts.
    """

    def __init__(self, vocabularies: dict[str, Iterable[str]]) -> None:
        single: dict[str, list[tuple[str, str]]] = {}
        multi: dict[str, dict[str, list[tuple[tuple[str, ...], str, str]]]] = {}
        for name, terms in vocabularies.items():
            for term in {normalise_term(t) for t in terms} - {""}:
                parts = tuple(tokenize(term))
                if len(parts) == 1:
                    single.setdefault(parts[0], []).append((term, name))
                elif parts:
                    multi.setdefault(parts[0], {}).setdefault(parts[1], []).append((parts, term, name))
        for by_second in multi.values():
            for entries in by_second.values():
                entries.sort(key=lambda e: (-len(e[0]), e[1]))
        self._single = single
        self._multi = multi
        self._firsts = frozenset(single) | frozenset(multi)

    def find(
        self, tokens: Sequence[str], present: AbstractSet[str] | None = None
    ) -> dict[str, list[tuple[int, str]]]:
        starts = self._firsts & (set(tokens) if present is None else present)
        found: dict[str, list[tuple[int, str]]] = {}
        if not starts:
            return found
        single = self._single
        multi = self._multi
        n = len(tokens)
        after: dict[str, int] = {}
        for i in [i for i, tok in enumerate(tokens) if tok in starts]:
            tok = tokens[i]
            taken: tuple[str, ...] = ()
            by_second = multi.get(tok)
            if by_second is not None and i + 1 < n:
                for parts, term, name in by_second.get(tokens[i + 1], ()):
                    k = len(parts)
                    if name in taken or i < after.get(name, 0) or i + k > n:
                        continue
                    if k == 2 or tuple(tokens[i + 2 : i + k]) == parts[2:]:
                        found.setdefault(name, []).append((i, term))
                        after[name] = i + k
                        taken += (name,)
            for term, name in single.get(tok, ()):
                if name not in taken and i >= after.get(name, 0):
                    found.setdefault(name, []).append((i, term))
                    after[name] = i + 1
        return found
