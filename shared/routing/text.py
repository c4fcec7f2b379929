"""Text conditions: keyword terms, the folded text of a mention, and `text_query` queries."""

from __future__ import annotations

import re
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from shared.filters import KeywordFilter

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
