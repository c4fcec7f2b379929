"""A dictionary-lexicon sentiment scorer: VADER's word list, without VADER's per-call costs.

VADER's `polarity_scores` re-tokenises and re-scans the text once per rule (about 330 µs on 270
characters and worse than linear on longer text). This scorer reads VADER's lexicon file from the
installed package once, looks every token up in one dict, and applies the same kinds of rule only
around the few tokens that carry a valence:

- negation within the three preceding words ("not bad", "no problems at all", "doesn't work");
- intensifiers and dampeners before a word ("very slow", "kind of nice");
- contrast: in a sentence with "but"/"however", what precedes counts half and what follows 1.5x;
- emphasis: an ALL-CAPS word in a text that is not shouting throughout, and exclamation marks;
- a question counts for less than a statement ("is there a better way?" is not praise);
- emoji (VADER's emoji descriptions, scored) and emoticons (":)", ":-(", "<3") between spaces;
- phrases and domain words a product's users write ("stopped working", "laggy", "such a bargain").

Text in German, French, Spanish, Italian, Dutch or Portuguese is scored with a small lexicon of its
own (VADER's English words are false friends there: German "die", French "l'"). The compound score is
VADER's normalisation of the sum, in [-1, 1].
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from importlib import resources

from shared.classify.matcher import PhraseMatcher, tokenize
from shared.events import Sentiment

# VADER's constants (Hutto & Gilbert, 2014).
_BOOST = 0.293
_CAPS = 0.733
_NEGATION = -0.74
_EXCLAIM = 0.292
_ALPHA = 15.0
_QUESTION = 0.5

# fmt: off
_NEGATORS = frozenset(
    """not no never none nobody nothing nowhere neither nor cannot without lack lacks lacking hardly
    rarely seldom despite aint cant dont doesnt didnt isnt wasnt werent wont wouldnt couldnt shouldnt
    havent hasnt hadnt nope nicht kein keine keinen nie ohne pas jamais sans non nunca sin senza niet
    geen nooit não nem""".split()  # noqa: SIM905
)
_EXTRA_BOOSTERS = dict.fromkeys(
    "sehr wirklich total echt très vraiment trop muy demasiado molto troppo erg heel muito".split(),  # noqa: SIM905
    _BOOST,
)
_CONTRAST = frozenset({"but", "however", "aber", "mais", "pero", "ma", "maar", "mas"})
_BOUNDARIES = frozenset({".", "!", "?", ";"})
_MARKS = _CONTRAST | _BOUNDARIES

# VADER entries that are other words in a product's mentions (or in other languages' text that
# borrows English words): "support" the department, "excel" the program, "loom" the protocol.
_NOT_SENTIMENT = """support supported please help helps share shared sharing pretty kind sort matter interest
    credit party no yes excel hand save saved creating created invite invited number security loom wins win
    growing growth expand launched mature offline hide hidden chaos fake huge l die impression ha
    fun""".split()  # noqa: SIM905

# Words whose valence in a product's mentions is not the everyday one VADER's raters gave, and
# frequent complaint words VADER lacks.
DOMAIN_LEXICON: dict[str, float] = {
    "bug": -1.2, "bugs": -1.2, "buggy": -1.9, "crashes": -1.8, "crashing": -1.9, "crashed": -1.8,
    "freeze": -1.4, "freezes": -1.6, "froze": -1.5, "frozen": -1.0, "glitch": -1.4, "glitches": -1.4,
    "glitchy": -1.8, "laggy": -1.7, "lag": -1.1, "lags": -1.2, "sluggish": -1.6, "slow": -1.2,
    "slower": -1.4, "unresponsive": -1.7, "outage": -1.9, "outages": -1.9, "downtime": -1.2,
    "unusable": -2.5, "broke": -1.5, "regression": -0.8, "overpriced": -1.9, "pricey": -0.9,
    "expensive": -0.9, "clunky": -1.6, "confusing": -1.4, "unintuitive": -1.5, "cluttered": -1.1,
    "issue": -0.5, "issues": -0.5, "refund": -0.3, "vulnerability": -0.8, "breach": -2.0,
    "leaked": -1.8, "leak": -1.0, "exploit": -1.2, "scam": -2.6, "ripoff": -2.6, "joke": -1.0,
    "meh": -0.8, "tedious": -1.5, "infuriating": -2.5, "annoying": -1.8, "misleading": -2.0,
    "deceptive": -2.2, "shameful": -2.4, "ghosted": -1.8, "toxic": -2.3, "blurry": -1.2,
    "flickers": -1.2, "unhelpful": -1.6, "dismissive": -1.8, "defensive": -1.0, "expires": -0.6,
    "greyed": -0.5, "orphaned": -1.0, "unavailable": -1.4, "failing": -1.8, "timeouts": -1.3,
    "intuitive": 1.6, "seamless": 1.8, "seamlessly": 1.8, "smooth": 1.3, "smoothly": 1.3,
    "smoother": 1.4, "snappy": 1.6, "fast": 1.0, "faster": 1.1, "fastest": 1.4, "reliable": 1.5,
    "works": 0.8, "working": 0.6, "worked": 0.7, "fixed": 1.0, "stable": 1.2, "polished": 1.5,
    "lifesaver": 2.5, "kudos": 2.0, "thanks": 1.5, "thank": 1.5, "recommend": 1.5,
    "recommended": 1.5, "gamechanger": 2.5, "free": 0.3, "like": 0.8, "interested": 0.3,
    "adore": 2.6, "adorable": 2.2, "delight": 2.2, "solid": 1.3, "cheaper": 0.8, "candid": 1.2,
}
# Token sequences with a valence of their own (matched before single words).
PHRASES: dict[str, float] = {
    "stopped working": -2.0, "no longer works": -2.0, "does not work": -1.8, "doesn't work": -1.8,
    "not working": -1.8, "waste of time": -2.2, "waste of money": -2.4, "game changer": 2.5,
    "works like a charm": 2.6, "too expensive": -1.9, "too slow": -1.9, "lost my data": -2.6,
    "data loss": -2.2, "never again": -2.2, "well done": 2.0, "great job": 2.6, "thank you": 1.8,
    "so so": -0.4, "nothing special": -1.0, "not bad": 1.3, "no problems": 1.6, "no problem": 1.2,
    "no issues": 1.6, "no complaints": 1.8, "too many clicks": -1.5, "takes ages": -1.6,
    "kind of": 0.0, "sort of": 0.0, "worth every penny": 2.8, "worth every cent": 2.8,
    "not worth it": -2.0, "hard to find": -1.2, "hard to use": -1.6, "locked out": -1.8,
    "charged twice": -2.0, "double charged": -2.0, "still waiting": -1.6, "no reply": -1.4,
    "no response": -1.4, "no explanation": -1.2, "not impressed": -1.8, "bait and switch": -2.4,
    "step back": -1.5, "not a great look": -1.6, "painfully slow": -2.4, "go back": 0.0,
    "pen and paper": 0.0, "no heroics": 0.8,
    # sarcasm: praise words that say the opposite
    "yeah right": -2.0, "just what i needed": -2.2, "love that for us": -2.2, "thanks for nothing": -2.6,
    "such a bargain": -2.0, "really makes my day": -2.0, "makes my day": -1.0, "oh wonderful": -2.0,
    "perfect timing": -1.8, "truly impressive": -1.5, "what a great feature": -2.2, "that'll help": -1.8,
    "brilliant update": -1.8, "nothing like being": -1.8, "love paying": -2.2, "sure, hide": -1.0,
    "down again": -2.0, "crashed again": -2.0, "froze again": -2.0,
    # other languages (scored when the text is not English)
    "zu teuer": -2.0, "trop cher": -2.0, "demasiado caro": -2.0, "caro demais": -2.0, "te duur": -2.0,
    "loopt vast": -1.8, "fora do ar": -2.0, "nicht erreichbar": -2.0, "gar nicht schlecht": 1.6,
}
# Sentiment words of the other languages the language guess knows (VADER is English only).
MULTILINGUAL_LEXICON: dict[str, float] = {
    # de
    "gut": 1.5, "toll": 2.0, "super": 2.0, "schlecht": -2.0, "zufrieden": 1.8, "begeistert": 2.3,
    "empfehlenswert": 2.0, "ärgerlich": -2.0, "nervig": -1.8, "teuer": -1.0, "langsam": -1.3,
    "stürzt": -1.8, "absturz": -2.0, "fehler": -1.3, "probleme": -1.0, "problem": -1.0, "leider": -1.0,
    "enttäuscht": -2.0, "unübersichtlich": -1.6, "übersichtlich": 1.3, "schnell": 1.0, "stabil": 1.2,
    "funktioniert": 0.8, "danke": 1.5, "liebe": 2.5, "lieben": 2.5, "anstrengend": -1.3,
    "katastrophe": -2.5, "ausgefallen": -1.8, "lücke": -1.0, "sicherheitslücke": -1.5,
    # fr
    "génial": 2.3, "bien": 1.2, "excellent": 2.5, "adore": 2.5, "merci": 1.5, "pénible": -1.8,
    "frustrant": -2.0, "inacceptable": -2.5, "confuse": -1.3, "cher": -1.0, "panne": -1.8,
    "plante": -1.8, "erreur": -1.3, "disparaissent": -1.5, "lent": -1.3, "agréable": 1.8,
    "mauvais": -2.0, "nul": -2.0, "déçu": -2.0, "problème": -1.0, "vivants": 1.0, "coupé": -1.0,
    "manque": -1.0, "impossible": -1.3,
    # es
    "encanta": 2.5, "genial": 2.3, "bueno": 1.5, "buena": 1.5, "buenas": 1.5, "excelente": 2.5,
    "recomendable": 2.0, "frustrante": -2.0, "caro": -1.0, "cuelga": -1.8, "error": -1.3,
    "lento": -1.3, "malo": -2.0, "gracias": 1.5, "problema": -1.0, "horrible": -2.5,
    "pendiente": -0.8, "contesta": 0.0,
    # it
    "fantastico": 2.3, "bellissimo": 2.5, "benissimo": 2.3, "ottimo": 2.3, "consiglio": 1.3,
    "fastidioso": -1.8, "blocca": -1.8, "errore": -1.3, "grazie": 1.5, "utile": 1.0,
    # nl
    "tevreden": 1.8, "handig": 1.3, "snel": 1.0, "vervelend": -1.8, "duur": -1.0, "traag": -1.3,
    "fout": -1.3, "geweldig": 2.3, "goed": 1.5, "slecht": -2.0,
    # pt
    "adoramos": 2.5, "adoro": 2.5, "bom": 1.5, "ótimo": 2.3, "rápido": 1.0, "chato": -1.5,
    "trava": -1.8, "absurdo": -2.0, "erro": -1.3, "perdemos": -1.5,
}
# Emoji VADER's descriptions score poorly or not at all.
EMOJI: dict[str, float] = {
    "👍": 1.8, "👎": -1.8, "❤": 2.6, "😍": 2.8, "🥰": 2.8, "🎉": 2.2, "🙌": 2.0, "👏": 1.8, "🚀": 1.6,
    "🔥": 1.2, "✅": 0.8, "🙏": 1.2, "😊": 2.0, "🙂": 1.2, "😀": 2.0, "😃": 2.0, "😂": 1.2, "😡": -2.6,
    "🤬": -3.0, "😠": -2.4, "😤": -1.8, "😢": -2.0, "😭": -2.2, "😞": -2.0, "😩": -2.0, "🙄": -1.6,
    "💩": -2.2, "😒": -1.6, "😕": -1.2, "🙁": -1.4, "☹": -1.8, "💔": -2.2, "🤮": -2.6, "😱": -1.6,
}
# fmt: on
_EMOTICON_RE = re.compile(r"(?<!\S)(?:[:;=8][-o'^]?[()\[\]DPp/\\|*3]+|<3+|[()][-o]?[:;=])(?=\s|$|[.,!?])")
_HAPPY_EMOTICON_ENDS = frozenset(")]DPp*3")
# A cheap scan (no look-behind) that rules out the emoticon regex for most texts.
_EMOTICON_HINT = re.compile(r":[-)(DPp/|\]\[*]|;[-)]|<3|=[)(]|\):|\(:")
ENGLISH_LIKE = frozenset({"en", "und"})


@dataclass(frozen=True, slots=True)
class SentimentResult:
    score: float
    label: Sentiment
    confidence: float
    evidence: list[str] = field(default_factory=list)
    positive: float = 0.0  # the summed positive valences, before normalisation
    negative: float = 0.0
    hits: int = 0


@dataclass(slots=True)
class _Tally:
    """The running sums of one text's scoring: the compound's input, the positive and negative valences
    (for the confidence), the hits, and the evidence so far."""

    total: float
    positive: float
    negative: float
    hits: int
    evidence: list[str]


@functools.cache
def vader_lexicon() -> dict[str, float]:
    """VADER's word list (read from the installed vaderSentiment package once) with its emoji
    descriptions scored, overlaid with this project's domain words and emoji."""
    package = resources.files("vaderSentiment")
    lexicon: dict[str, float] = {}
    for line in (package / "vader_lexicon.txt").read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            try:
                lexicon[parts[0].lower()] = float(parts[1])
            except ValueError:
                continue
    for line in (package / "emoji_utf8_lexicon.txt").read_text(encoding="utf-8").splitlines():
        emoji, _, description = line.partition("\t")
        emoji = emoji.replace("\ufe0f", "")
        if len(emoji) != 1:
            continue  # sequences (flags, skin tones) are split into single characters by the tokenizer
        score = sum(lexicon.get(w, 0.0) for w in description.lower().split())
        if score:
            lexicon[emoji] = max(-3.0, min(3.0, score))
    lexicon.update(DOMAIN_LEXICON)
    lexicon.update(EMOJI)
    for word in _NOT_SENTIMENT:
        lexicon.pop(word, None)
    return {word: valence for word, valence in lexicon.items() if valence}


@functools.cache
def multilingual_lexicon() -> dict[str, float]:
    """The lexicon for text that is not English: its own words, emoji, and no English false friends."""
    return {w: v for w, v in {**MULTILINGUAL_LEXICON, **EMOJI}.items() if v}


@functools.cache
def _boosters() -> dict[str, float]:
    from vaderSentiment.vaderSentiment import BOOSTER_DICT

    return {**{k: float(v) for k, v in BOOSTER_DICT.items() if " " not in k}, **_EXTRA_BOOSTERS}


@functools.cache
def _phrases() -> PhraseMatcher:
    return PhraseMatcher(PHRASES)


def label_for(score: float, threshold: float) -> Sentiment:
    if score >= threshold:
        return Sentiment.POSITIVE
    if score <= -threshold:
        return Sentiment.NEGATIVE
    return Sentiment.NEUTRAL


class LexiconScorer:
    """Scores tokens (see shared.classify.matcher.tokenize); safe to share, holds no per-call state."""

    version = "lex-1"

    def __init__(self, *, neutral_threshold: float = 0.2) -> None:
        self.neutral_threshold = neutral_threshold
        self._lexicon = vader_lexicon()
        self._foreign = multilingual_lexicon()
        self._lexicon_keys = frozenset(self._lexicon)
        self._foreign_keys = frozenset(self._foreign)
        self._boosters = _boosters()
        self._phrases = _phrases()
        self._phrase_lengths = {p: len(tokenize(p)) for p in PHRASES}

    def score_text(self, text: str) -> SentimentResult:
        return self.score(text, tokenize(text))

    def score(
        self,
        text: str,
        tokens: Sequence[str],
        present: AbstractSet[str] | None = None,
        *,
        language: str = "en",
        phrases: Sequence[tuple[int, str]] | None = None,
    ) -> SentimentResult:
        """The sentiment of `text`, given its tokens (and their set, if the caller has it) and its
        language (ISO 639-1; anything but "en"/"und" uses the multilingual lexicon)."""
        lexicon = self._lexicon if language in ENGLISH_LIKE else self._foreign
        if present is None:
            present = set(tokens)
        phrase_hits, covered = self._phrase_hits(tokens, present, phrases)
        wanted = present & (self._lexicon_keys if lexicon is self._lexicon else self._foreign_keys)
        emoticons = _emoticons(text) if _EMOTICON_HINT.search(text, 0, 5000) else []
        if not wanted and not phrase_hits and not emoticons:
            empty = not tokens
            return SentimentResult(
                score=0.0,
                label=Sentiment.NEUTRAL,
                confidence=0.3 if empty else 0.6,
                evidence=["lexicon:no text" if empty else "lexicon:no sentiment words"],
            )
        wanted = wanted | _MARKS
        # Valence words, sentence ends and contrast words, in text order (one pass over the tokens).
        seq = [(i, tok) for i, tok in enumerate(tokens) if tok in wanted]
        if phrase_hits:
            seq = sorted([(i, tok) for i, tok in seq if i not in covered] + phrase_hits)
        tally = self._sentences(text, tokens, seq, lexicon)
        _add_emoticons(tally, emoticons, lexicon)
        _add_exclamations(tally, text)
        return self._result(tally)

    def _phrase_hits(
        self,
        tokens: Sequence[str],
        present: AbstractSet[str],
        phrases: Sequence[tuple[int, str]] | None,
    ) -> tuple[list[tuple[int, str]], set[int]]:
        """The phrases with a valence, by position, and the positions every phrase covers (the words of a
        phrase are not scored again on their own: "not bad" is one hit, not "bad" negated)."""
        phrase_hits: list[tuple[int, str]] = []
        covered: set[int] = set()
        if phrases is None:
            phrases = list(self._phrases.find(tokens, present))
        for i, phrase in phrases:
            if PHRASES[phrase]:
                phrase_hits.append((i, phrase))
            covered.update(range(i, i + self._phrase_lengths[phrase]))
        return phrase_hits, covered

    def _sentences(
        self, text: str, tokens: Sequence[str], seq: Sequence[tuple[int, str]], lexicon: dict[str, float]
    ) -> _Tally:
        """The valences of `seq`'s words summed sentence by sentence: a question counts for less, and
        before a contrast word half, after it 1.5 times."""
        caps = not text.isupper()
        evidence: list[str] = []
        total = 0.0
        sentence = 0.0
        weight = 1.0
        start = 0
        positive = negative = 0.0
        hits = 0
        for i, word in seq:
            if word in _MARKS:
                if word in _BOUNDARIES:
                    total += sentence * _QUESTION if word == "?" else sentence
                    sentence, weight, start = 0.0, 1.0, i + 1
                else:
                    sentence *= 0.5
                    weight = 1.5
                    if len(evidence) < 10:
                        evidence.append(f"contrast:{word}")
                continue
            valence = lexicon.get(word)
            if valence is None:
                valence = PHRASES[word]
            v, note = self._adjust(tokens, i, valence, start, caps, word, text)
            v *= weight
            sentence += v
            hits += 1
            if v > 0:
                positive += v
            else:
                negative += v
            if len(evidence) < 10:
                evidence.append(f"{note}{word}={v:+.2f}")
        total += sentence
        return _Tally(total=total, positive=positive, negative=negative, hits=hits, evidence=evidence)

    def _result(self, tally: _Tally) -> SentimentResult:
        """VADER's normalisation of the sum, its label, and a confidence."""
        total, positive, negative, n = tally.total, tally.positive, tally.negative, tally.hits
        score = total / math.sqrt(total * total + _ALPHA)
        score = max(-1.0, min(1.0, score))
        label = label_for(score, self.neutral_threshold)
        # Confidence: how far the score is from the neutral band, less when the text pulls both ways
        # or when a single word decides.
        mixed = min(positive, -negative) / max(positive, -negative) if positive and negative else 0.0
        if label is Sentiment.NEUTRAL:
            confidence = 0.55 - 0.15 * mixed
        else:
            confidence = 0.5 + 0.45 * abs(score) * (1 - 0.5 * mixed) * (0.75 if n == 1 else 1.0)
        tally.evidence.insert(0, f"lexicon:compound={score:+.3f} ({n} hit{'s' if n != 1 else ''})")
        return SentimentResult(
            score=round(score, 4),
            label=label,
            confidence=round(min(0.95, confidence), 3),
            evidence=tally.evidence,
            positive=positive,
            negative=negative,
            hits=n,
        )

    def _adjust(
        self, tokens: Sequence[str], i: int, valence: float, start: int, caps: bool, word: str, text: str
    ) -> tuple[float, str]:
        """The valence of the word at `i` after emphasis, intensifiers and negation before it."""
        v = valence
        note = ""
        if caps and len(word) > 1 and word.upper() in text:
            v += math.copysign(_CAPS, v)
            note = "caps:"
        seen = 0
        j = i - 1
        negated = False
        while j >= start and seen < 3:
            tok = tokens[j]
            if tok in _MARKS or tok == ",":
                break
            if tok == "t" and j >= 2 and tokens[j - 1] == "'" and tokens[j - 2].endswith("n"):
                tok = "not"  # "doesn't", "isn't", "can't": the tokenizer splits them in three
                j -= 2
            elif tok == "'":
                j -= 1
                continue
            boost = self._boosters.get(tok)
            if boost is not None and v:
                v += math.copysign(boost * (1.0, 0.95, 0.9)[seen], v)
                note = note or "boost:"
            if not negated and tok in _NEGATORS:
                v *= _NEGATION
                negated = True
                note = "negated:"
            seen += 1
            j -= 1
        return v, note


def _emoticons(text: str) -> list[str]:
    return _EMOTICON_RE.findall(text, 0, 5000)


def _add_emoticons(tally: _Tally, emoticons: Sequence[str], lexicon: dict[str, float]) -> None:
    """Emoticons count as hits of their own, outside any sentence (a lexicon entry, else ±1.5 by the
    mouth's direction)."""
    for emoticon in emoticons:
        v = lexicon.get(emoticon.lower(), 0.0) or (
            1.5 if emoticon[-1] in _HAPPY_EMOTICON_ENDS or emoticon.startswith("<3") else -1.5
        )
        tally.total += v
        if v > 0:
            tally.positive += v
        else:
            tally.negative += v
        tally.hits += 1
        if len(tally.evidence) < 10:
            tally.evidence.append(f"emoticon:{emoticon}={v:+.2f}")


def _add_exclamations(tally: _Tally, text: str) -> None:
    """Up to four exclamation marks push the sum further the way it already leans."""
    bangs = min(4, text.count("!", 0, 5000))
    if bangs and tally.total:
        tally.total += math.copysign(bangs * _EXCLAIM, tally.total)
        tally.evidence.append(f"exclamation:{bangs}")
