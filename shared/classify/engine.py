"""The rule engine: taxonomy topics, lexicon sentiment, intent, urgency and language, each with its
confidence and evidence. Explainable, offline, and fast (one tokenisation, one pass per vocabulary)."""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, replace
from typing import Any, Protocol

from shared.classify.intent import (
    CUE_TERMS,
    URGENCY_CUES,
    IntentResult,
    UrgencyResult,
    classify_intent,
    estimate_urgency,
)
from shared.classify.language import LanguageGuess, detect_language, guess_language
from shared.classify.matcher import VocabularyMatcher, tokenize
from shared.classify.sentiment import PHRASES, LexiconScorer, SentimentResult
from shared.classify.taxonomy import Taxonomy
from shared.events import Classification, Mention, Sentiment, TopicLabel

__all__ = ["TEXT_MAX_CHARS", "Analysis", "Engine", "RuleEngine", "detect_language", "mention_text"]

# Past this many characters a post is read from its beginning, where posts and comments state their
# point; it bounds the time and memory of a classification whatever arrives (a 1 MB text costs the same
# as a 20 kB one).
TEXT_MAX_CHARS = 20_000


class Engine(Protocol):
    name: str
    version: str

    def classify(self, mention: Mention) -> Classification: ...

    def classify_many(self, mentions: list[Mention]) -> list[Classification]:
        """One classification per mention, in order (a model batches its encoder over them)."""
        ...

    def use_taxonomy(self, taxonomy: Taxonomy) -> None: ...


# Titles that only name a post and who wrote a comment on it (WordPress and most blog engines' comment
# feeds): "Comment on The new release by Grace Whitlock". Read as text, the post's title and the author's
# name would count as the comment's sentiment ("Grace" is positive to a lexicon).
_NAMING_TITLE = re.compile(r"(?is)\s*(?:comment|reply|response)\s+(?:on|to)\s+.+\s+by\s+.+")


def mention_text(mention: Mention) -> str:
    """The text an engine reads: the title (unless it only names the post and the comment's author),
    then the body, capped; curly apostrophes straightened."""
    title = mention.title
    if title and _NAMING_TITLE.fullmatch(title):
        title = ""
    text = f"{title}. {mention.text}" if title else mention.text
    return text[:TEXT_MAX_CHARS].replace("\u2019", "'")


class RuleEngine:
    name = "rules"

    def __init__(self, taxonomy: Taxonomy, *, scorer: LexiconScorer | None = None) -> None:
        self.scorer = scorer or LexiconScorer()
        self.use_taxonomy(taxonomy)

    def use_taxonomy(self, taxonomy: Taxonomy) -> None:
        """Switch to another taxonomy (a reload); classifications already made keep the old version."""
        # Taxonomy terms, sentiment phrases, intent and urgency cues: one pass over the tokens for all.
        self._vocabularies = VocabularyMatcher(
            {"topics": taxonomy.terms, "phrases": PHRASES, "cues": CUE_TERMS, "urgency": URGENCY_CUES}
        )
        self.taxonomy = taxonomy
        self.version = f"rules-2+taxonomy-{taxonomy.version}"

    def analyse(self, mention: Mention) -> Analysis:
        """Every rule label of a mention, with the tokens they came from (the learned engine reuses them)."""
        text = mention_text(mention)
        tokens = tokenize(text)
        present = set(tokens)
        found = self._vocabularies.find(tokens, present)
        topics = [
            TopicLabel(
                name=m.topic,
                confidence=min(0.95, 0.55 + 0.15 * (len(m.hits) - 1)),
                evidence=[f"{'regex' if h in m.regex_hits else 'term'}:{h}" for h in m.hits[:10]],
            )
            for m in self.taxonomy.match(text, tokens, present, term_hits=found.get("topics", []))
        ]
        topics.sort(key=lambda t: (-t.confidence, t.name))
        names = frozenset(t.name for t in topics)
        language = guess_language(text, tokens, hint=mention.language_hint, present=present)
        sentiment = self.scorer.score(
            text, tokens, present, language=language.language, phrases=found.get("phrases", [])
        )
        problems = _PROBLEM_TOPICS & names
        if problems and sentiment.label is Sentiment.NEUTRAL and sentiment.score <= 0 and "?" not in present:
            # A defect or an outage reported without a single sentiment word ("the frames reorder
            # themselves") is still a complaint: lean negative, with a low confidence that says so.
            sentiment = replace(
                sentiment,
                score=-self.scorer.neutral_threshold,
                label=Sentiment.NEGATIVE,
                confidence=0.45,
                evidence=[*sentiment.evidence, f"topic prior: {', '.join(sorted(problems))} reported"],
            )
        intent = classify_intent(
            tokens, topics=names, score=sentiment.score, present=present, cues=found.get("cues", [])
        )
        urgency = estimate_urgency(
            tokens,
            mention,
            topics=names,
            score=sentiment.score,
            intent=intent.intent,
            present=present,
            cues=found.get("urgency", []),
        )
        letters = letter_share(text)
        if letters < GARBLED:
            # Binary garbage or mojibake: whatever the lexicons found in it is noise.
            note = f"garbled text: {letters:.0%} letters"
            sentiment = replace(
                sentiment, confidence=min(sentiment.confidence, 0.3), evidence=[note, *sentiment.evidence]
            )
            intent = replace(
                intent, confidence=min(intent.confidence, 0.3), evidence=[note, *intent.evidence]
            )
            language = replace(language, confidence=round(language.confidence / 2, 3))
        return Analysis(
            mention=mention,
            text=text,
            tokens=tokens,
            present=present,
            topics=topics,
            topic_names=names,
            sentiment=sentiment,
            intent=intent,
            urgency=urgency,
            language=language,
        )

    def classify(self, mention: Mention) -> Classification:
        return self.classification(self.analyse(mention))

    def classify_many(self, mentions: list[Mention]) -> list[Classification]:
        return [self.classify(m) for m in mentions]

    def classification(self, a: Analysis, **overrides: Any) -> Classification:
        """The rule labels of an analysis as a Classification; `overrides` replace fields (built once,
        so that an engine on top of this one pays for one validation, not two)."""
        fields: dict[str, Any] = dict(
            sentiment=a.sentiment.label,
            sentiment_score=a.sentiment.score,
            sentiment_confidence=a.sentiment.confidence,
            sentiment_evidence=a.sentiment.evidence,
            topics=a.topics,
            language=a.language.language,
            language_confidence=a.language.confidence,
            language_evidence=a.language.evidence,
            intent=a.intent.intent,
            intent_confidence=a.intent.confidence,
            intent_evidence=a.intent.evidence,
            urgency=a.urgency.urgency,
            urgency_evidence=a.urgency.evidence,
            engine=self.name,
            engine_version=self.version,
        )
        fields.update(overrides)
        return Classification(**fields)


GARBLED = 0.6
_PROBLEM_TOPICS = frozenset({"bug", "outage"})
# Neither a letter nor white space: in prose a few percent (punctuation, digits), so the list is short.
_OTHER = re.compile(r"[\W\d_](?<!\s)")
_ASCII_LETTERS_SPACE = (string.ascii_letters + string.whitespace).encode("ascii")


def letter_share(text: str) -> float:
    """The share of letters and spaces in the text's opening (prose: above 0.8; random bytes: about 0.4)."""
    sample = text[:2000]
    if not sample:
        return 1.0
    if sample.isascii():
        # bytes.translate deletes the letters and spaces at C speed; what is left is the rest.
        return 1.0 - len(sample.encode("ascii").translate(None, _ASCII_LETTERS_SPACE)) / len(sample)
    return 1.0 - len(_OTHER.findall(sample)) / len(sample)


@dataclass(frozen=True, slots=True)
class Analysis:
    mention: Mention
    text: str
    tokens: list[str]
    present: set[str]
    topics: list[TopicLabel]
    topic_names: frozenset[str]
    sentiment: SentimentResult
    intent: IntentResult
    urgency: UrgencyResult
    language: LanguageGuess
