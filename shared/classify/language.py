"""Language (ISO 639-1) from the script of the letters and, for Latin script, from stop words."""

from __future__ import annotations

import re
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from shared.classify.matcher import tokenize

_STOPWORD_LISTS = {
    "en": "the and is are was were to of in that it for on with this you not but have be my we they what i a "
    "how do our at an your",
    "de": "der die das und ist nicht ein eine ich mit sich auf für den dem zu es wir sie auch aber wie",
    "fr": "le la les et est une un des pas pour que qui dans ce il elle nous vous avec mais très sur",
    "es": "el la los las y es una un que de en por para con no se lo su pero muy está como",
    "it": "il lo la gli le e è una un che di per non con sono ma anche molto questo della",
    "nl": "de het een en is niet dat van op te met voor zijn maar ook wij ik heb",
    "pt": "o a os as e é um uma que de em para com não se por mais mas muito está",
    "pl": "nie się że jest jak ale tak już czy dla być jestem",
    "sv": "och att det är som på för med inte har jag av",
}
# One set per language: a text's distinct tokens are intersected with each (at C speed).
_STOPWORD_SETS = [(lang, frozenset(words.split())) for lang, words in _STOPWORD_LISTS.items()]

# Scripts that name a language (or the most likely one) by themselves.
_SCRIPTS: list[tuple[str, re.Pattern[str]]] = [
    ("ja", re.compile(r"[\u3040-\u30ff]")),  # kana: Japanese even when mixed with kanji
    ("ko", re.compile(r"[\uac00-\ud7af\u1100-\u11ff]")),
    ("zh", re.compile(r"[\u4e00-\u9fff]")),
    ("ru", re.compile(r"[\u0400-\u04ff]")),
    ("el", re.compile(r"[\u0370-\u03ff]")),
    ("ar", re.compile(r"[\u0600-\u06ff]")),
    ("he", re.compile(r"[\u0590-\u05ff]")),
    ("hi", re.compile(r"[\u0900-\u097f]")),
    ("th", re.compile(r"[\u0e00-\u0e7f]")),
]
_LETTER = re.compile(r"[^\W\d_]")
# Any letter of the scripts above: most non-ASCII text is Latin with accents or emoji, and skips the count.
_NON_LATIN = re.compile(
    r"[\u0370-\u06ff\u0900-\u097f\u0e00-\u0e7f\u1100-\u11ff\u3040-\u30ff\u4e00-\u9fff\uac00-\ud7af]"
)
_SAMPLE = 2000


@dataclass(frozen=True, slots=True)
class LanguageGuess:
    language: str
    confidence: float
    evidence: list[str] = field(default_factory=list)


def guess_language(
    text: str,
    tokens: Sequence[str] | None = None,
    hint: str | None = None,
    present: AbstractSet[str] | None = None,
) -> LanguageGuess:
    """The language of `text` with a confidence; the source's hint when the text says too little."""
    sample = text[:_SAMPLE]
    if not sample.isascii() and _NON_LATIN.search(sample):
        letters = len(_LETTER.findall(sample))
        if letters:
            counts = [(lang, len(rx.findall(sample))) for lang, rx in _SCRIPTS]
            lang, n = max(counts, key=lambda c: c[1])
            # A script wins when it holds most of the letters (mixed-script text goes to the majority).
            if n >= 3 and n / letters > 0.4:
                return LanguageGuess(lang, round(min(0.95, 0.5 + n / letters / 2), 3), [f"script:{lang}={n}"])
    if present is None:
        present = set(tokenize(sample) if tokens is None else tokens)
    # Distinct stop words, not occurrences: one repeated word ("de", "a") says little.
    counts_ = {lang: n for lang, words in _STOPWORD_SETS if (n := len(words & present))}
    if counts_:
        ranked = sorted(counts_.items(), key=lambda kv: -kv[1])
        lang, n = ranked[0]
        runner_up = ranked[1][1] if len(ranked) > 1 else 0
        if n == runner_up and counts_.get("en") == n:
            lang = "en"  # a tie with English ("de", "in") is English: the most frequent case here
        if n >= 2 and (n > runner_up or lang == "en"):
            margin = (n - runner_up) / n
            confidence = min(0.95, 0.4 + 0.1 * min(n, 5) * margin)
            return LanguageGuess(
                lang, round(confidence, 3), [f"stopwords:{lang}={n}", f"runner-up={runner_up}"]
            )
    if hint:
        return LanguageGuess(hint, 0.3, [f"hint:{hint}"])
    return LanguageGuess("und", 0.0, ["too little text"])


def detect_language(text: str, hint: str | None = None) -> str:
    """ISO 639-1 code of `text`, the hint when the text says too little, else "und"."""
    return guess_language(text, hint=hint).language


def language_or_none(text: str) -> str | None:
    """The detected language of `text`, or None when it says too little to tell (ingest's hint)."""
    language = detect_language(text)
    return None if language == "und" else language
