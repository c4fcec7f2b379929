"""Intent (question / complaint / praise / suggestion / information) and urgency, from cues, the topics
and the sentiment score. Each label carries the cues that produced it."""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from shared.classify.matcher import PhraseMatcher
from shared.events import Intent, Mention, MentionKind

CUES: dict[Intent, tuple[str, ...]] = {
    Intent.QUESTION: (
        "how do i",
        "how do you",
        "how can i",
        "how to",
        "is there a way",
        "is it possible",
        "does anyone",
        "anyone know",
        "can someone",
        "can anyone",
        "where do i",
        "where can i",
        "what is the best",
        "what's the best",
        "why does",
        "why is",
        "why can't",
        "help me",
        "any idea",
        "any ideas",
        "any tips",
        "am i the only",
        "wie kann ich",
        "gibt es",
        "comment faire",
        "est-ce que",
        "cómo",
        "como puedo",
        "¿",
    ),
    Intent.SUGGESTION: (
        "would love",
        "i'd love",
        "wish",
        "i wish",
        "please add",
        "should add",
        "could you add",
        "it would be great",
        "would be nice",
        "would be great",
        "suggestion",
        "suggest",
        "feature request",
        "i'd like to see",
        "consider adding",
        "hoping for",
        "any plans",
        "it would help",
        "should support",
        "should let",
        "please make",
        "please bring",
        "idea:",
        "wünsche",
        "bitte",
        "j'aimerais",
    ),
    Intent.COMPLAINT: (
        "unacceptable",
        "frustrated",
        "frustrating",
        "disappointed",
        "disappointing",
        "still waiting",
        "no response",
        "no reply",
        "fix this",
        "fix it",
        "terrible",
        "worst",
        "refund",
        "cancel",
        "cancelled",
        "angry",
        "annoying",
        "ridiculous",
        "waste",
        "never again",
        "complaint",
        "fed up",
        "sick of",
        "charged twice",
        "double charged",
        "lost my data",
        "doesn't work",
        "does not work",
        "not working",
        "stopped working",
        "unusable",
        "enttäuscht",
        "inacceptable",
        "decepcionado",
    ),
    Intent.PRAISE: (
        "love",
        "loving",
        "thank you",
        "thanks",
        "kudos",
        "great job",
        "well done",
        "amazing",
        "awesome",
        "recommend",
        "impressed",
        "brilliant",
        "fantastic",
        "excellent",
        "game changer",
        "lifesaver",
        "shout-out",
        "shoutout",
        "hats off",
        "super",
        "génial",
        "genial",
        "toll",
    ),
    Intent.INFORMATION: (
        "announced",
        "announces",
        "released",
        "launches",
        "launched",
        "according to",
        "press release",
        "report",
        "reports",
        "today",
        "this week",
        "version",
        "changelog",
        "release notes",
        "raises",
        "acquired",
        "hiring",
        "joins",
        "published",
        "paper",
        "benchmark",
        "interview",
    ),
}
URGENCY_CUES = (
    "urgent",
    "urgently",
    "asap",
    "immediately",
    "right now",
    "emergency",
    "critical",
    "lawsuit",
    "data loss",
    "lost my data",
    "breach",
    "leaked",
    "is down",
    "still down",
    "outage",
    "security hole",
    "deadline",
    "today",
    "can't work",
    "cannot work",
    "everyone",
    "all our",
    "production",
)
CUE_TERMS = sorted({cue for cues in CUES.values() for cue in cues})
_PROBLEM_TOPICS = frozenset(
    {"bug", "outage", "security", "order", "account", "usability", "pricing", "crisis"}
)
_NEWS_TOPICS = frozenset({"press", "partnership", "research", "hiring"})
_CRISIS_TOPICS = {"crisis": 0.3, "security": 0.3, "outage": 0.2, "bug": 0.05, "order": 0.05, "account": 0.05}


@functools.cache
def _cue_matcher() -> tuple[PhraseMatcher, dict[str, tuple[Intent, ...]]]:
    owners: dict[str, tuple[Intent, ...]] = {}
    for intent, cues in CUES.items():
        for cue in cues:
            owners[cue] = (*owners.get(cue, ()), intent)
    return PhraseMatcher(owners), owners


@functools.cache
def _urgency_matcher() -> PhraseMatcher:
    return PhraseMatcher(URGENCY_CUES)


@dataclass(frozen=True, slots=True)
class IntentResult:
    intent: Intent
    confidence: float
    evidence: list[str] = field(default_factory=list)
    scores: dict[Intent, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class UrgencyResult:
    urgency: float
    evidence: list[str] = field(default_factory=list)


def classify_intent(
    tokens: Sequence[str],
    *,
    topics: Collection[str],
    score: float,
    present: AbstractSet[str] | None = None,
    cues: Sequence[tuple[int, str]] | None = None,
) -> IntentResult:
    """The intent from cue phrases (`cues`: their matches, if already found), topics and sentiment."""
    matcher, owners = _cue_matcher()
    if cues is None:
        cues = list(matcher.find(tokens, present))
    q = c = p = s = 0.0
    info = 0.3
    evidence: dict[Intent, list[str]] = {}
    for _, cue in cues:
        for intent in owners[cue]:
            if intent is Intent.QUESTION:
                q += 0.3
            elif intent is Intent.COMPLAINT:
                c += 0.3
            elif intent is Intent.PRAISE:
                p += 0.3
            elif intent is Intent.SUGGESTION:
                s += 0.3
            else:
                info += 0.3
            found = evidence.setdefault(intent, [])
            if len(found) < 4:
                found.append(f"cue:{cue}")
    if present is None or "?" in present:
        questions = tokens.count("?")
        if questions:
            q += 0.6
            evidence.setdefault(Intent.QUESTION, []).append(f"question-mark:{questions}")
    if "how_to" in topics:
        q += 0.25
        evidence.setdefault(Intent.QUESTION, []).append("topic:how_to")
    if "feature_request" in topics:
        s += 0.3
        evidence.setdefault(Intent.SUGGESTION, []).append("topic:feature_request")
    if "praise" in topics:
        p += 0.15
        evidence.setdefault(Intent.PRAISE, []).append("topic:praise")
    if score < 0:
        c += 0.6 * -score
        evidence.setdefault(Intent.COMPLAINT, []).append(f"sentiment:{score:+.2f}")
        if _PROBLEM_TOPICS.intersection(topics):
            c += 0.15
            evidence[Intent.COMPLAINT].append("topic:problem")
        # A question asked in anger is a complaint ("why does it crash again??").
        q *= 1 + 0.6 * score
    elif score > 0:
        p += 0.5 * score
        evidence.setdefault(Intent.PRAISE, []).append(f"sentiment:{score:+.2f}")
        c *= 0.5
    if _NEWS_TOPICS.intersection(topics):
        info += 0.2
        evidence.setdefault(Intent.INFORMATION, []).append("topic:news")
    scores = {
        Intent.QUESTION: q,
        Intent.COMPLAINT: c,
        Intent.PRAISE: p,
        Intent.SUGGESTION: s,
        Intent.INFORMATION: info,
    }
    best = max(scores, key=scores.__getitem__)
    top = scores[best]
    second = max(v for k, v in scores.items() if k is not best)
    confidence = 0.35 + 0.35 * (top - second) / top + 0.25 * min(1.0, top)
    chosen = evidence.get(best) or ["default:no question, request or strong sentiment"]
    return IntentResult(best, round(min(0.95, confidence), 3), chosen, scores)


def estimate_urgency(
    tokens: Sequence[str],
    mention: Mention,
    *,
    topics: Collection[str],
    score: float,
    intent: Intent,
    present: AbstractSet[str] | None = None,
    cues: Sequence[tuple[int, str]] | None = None,
) -> UrgencyResult:
    """Urgency in [0, 1]: negativity, the source's reach, crisis topics and terms, an open question."""
    evidence: list[str] = []
    urgency = 0.0
    if score < 0:
        urgency += 0.35 * -score
        evidence.append(f"negativity:{-score:.2f}")
    if mention.influence > 1:
        urgency += 0.1 * (mention.influence - 1)
        evidence.append(f"reach:influence={mention.influence}")
    topic_weight = sum(w for t, w in _CRISIS_TOPICS.items() if t in topics)
    if topic_weight:
        urgency += min(0.4, topic_weight)
        evidence.append("topics:" + ",".join(t for t in _CRISIS_TOPICS if t in topics))
    if cues is None:
        cues = list(_urgency_matcher().find(tokens, present))
    terms = list(dict.fromkeys(cue for _, cue in cues))
    if terms:
        urgency += min(0.3, 0.1 * len(terms))
        evidence.extend(f"cue:{c}" for c in terms[:4])
    if intent is Intent.QUESTION:
        # A question waits for an answer, more so in a comment thread where the asker is watching.
        urgency += 0.15 if mention.kind is MentionKind.COMMENT else 0.1
        evidence.append("open question")
    return UrgencyResult(round(min(1.0, urgency), 3), evidence)
