"""The rule engine: taxonomy topics, VADER sentiment, stop-word language detection. Explainable, offline."""

from __future__ import annotations

import re
from collections import Counter
from typing import Protocol

from shared.classify.taxonomy import Taxonomy
from shared.events import Classification, Mention, Sentiment, TopicLabel

# VADER's cost grows faster than the text; past this many characters the sentiment of a long post is
# read from its beginning, where blog posts and comments state their point.
SENTIMENT_MAX_CHARS = 1_000
TOPIC_MAX_CHARS = 20_000

_STOPWORD_LISTS = {
    "en": "the and is are was were to of in that it for on with this you not but have be",
    "de": "der die das und ist nicht ein eine ich mit sich auf für den dem zu es wir sie",
    "fr": "le la les et est une un des pas pour que qui dans ce il elle nous vous avec",
    "es": "el la los las y es una un que de en por para con no se lo su pero muy",
    "it": "il lo la gli le e è una un che di per non con sono ma anche molto questo",
    "nl": "de het een en is niet dat van op te met voor zijn maar ook wij ik",
    "pt": "o a os as e é um uma que de em para com não se por mais mas muito",
}
_STOPWORDS = {lang: frozenset(words.split()) for lang, words in _STOPWORD_LISTS.items()}
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


class Engine(Protocol):
    name: str
    version: str

    def classify(self, mention: Mention) -> Classification: ...


def detect_language(text: str, hint: str | None = None) -> str:
    """ISO 639-1 code from stop-word counts; the source's hint when the text says too little."""
    counts: Counter[str] = Counter()
    for word in _WORD.findall(text[:2000].lower()):
        for lang, words in _STOPWORDS.items():
            if word in words:
                counts[lang] += 1
    if counts:
        lang, n = counts.most_common(1)[0]
        if n >= 2:
            return lang
    return hint or "und"


class RuleEngine:
    name = "rules"

    def __init__(self, taxonomy: Taxonomy) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.taxonomy = taxonomy
        self.version = f"rules-1+taxonomy-{taxonomy.version}"
        self._vader = SentimentIntensityAnalyzer()

    def classify(self, mention: Mention) -> Classification:
        text = f"{mention.title}. {mention.text}".replace("\u2019", "'")
        topics = [
            TopicLabel(
                name=m.topic,
                confidence=min(0.95, 0.55 + 0.15 * (len(m.hits) - 1)),
                evidence=[f"{'regex' if h in m.regex_hits else 'term'}:{h}" for h in m.hits[:10]],
            )
            for m in self.taxonomy.match(text[:TOPIC_MAX_CHARS])
        ]
        topics.sort(key=lambda t: (-t.confidence, t.name))
        scores = self._vader.polarity_scores(text[:SENTIMENT_MAX_CHARS])
        compound = float(scores["compound"])
        if compound >= 0.05:
            sentiment = Sentiment.POSITIVE
        elif compound <= -0.05:
            sentiment = Sentiment.NEGATIVE
        else:
            sentiment = Sentiment.NEUTRAL
        confidence = min(1.0, 0.5 + abs(compound) / 2) if sentiment is not Sentiment.NEUTRAL else 0.5
        return Classification(
            sentiment=sentiment,
            sentiment_score=max(-1.0, min(1.0, compound)),
            sentiment_confidence=round(confidence, 3),
            sentiment_evidence=[
                f"vader:compound={compound:.3f}",
                f"vader:pos={scores['pos']:.2f},neg={scores['neg']:.2f}",
            ],
            topics=topics,
            language=detect_language(text, mention.language_hint),
            engine=self.name,
            engine_version=self.version,
        )
