"""The learned engines: `LearnedEngine` labels with a model's accurate heads (shared.classify.model),
`CascadeEngine` with its fast heads first and the accurate ones where they are unsure. Both keep the
rule engine's topics, language and evidence, and give readable evidence for their own labels."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.classify.engine import GARBLED, Analysis, RuleEngine, letter_share
from shared.classify.intent import estimate_urgency
from shared.classify.model import FAST, FloatArray, LinearModel, Prediction
from shared.classify.taxonomy import Taxonomy
from shared.errors import ConfigError
from shared.events import Classification, Department, DepartmentLabel, Intent, Mention, Sentiment


class LearnedEngine:
    """The rule engine's topics, language and evidence, with sentiment, intent and the suggested
    departments from the model (urgency recomputed from the model's sentiment)."""

    name = "learned"

    def __init__(self, taxonomy: Taxonomy, model: LinearModel, *, rules: RuleEngine | None = None) -> None:
        self.rules = rules or RuleEngine(taxonomy)
        self.model = model
        self.use_taxonomy(taxonomy)

    def use_taxonomy(self, taxonomy: Taxonomy) -> None:
        self.rules.use_taxonomy(taxonomy)
        self.version = f"{self.model.version}+{self.rules.version}"

    def classify(self, mention: Mention) -> Classification:
        return self.classify_many([mention])[0]

    def classify_many(self, mentions: list[Mention]) -> list[Classification]:
        analyses = [self.rules.analyse(m) for m in mentions]
        predictions = self.model.predict_many(analyses)
        return [self.from_prediction(a, p) for a, p in zip(analyses, predictions, strict=True)]

    def from_prediction(
        self,
        a: Analysis,
        predictions: Prediction,
        *,
        stage: str = "accurate",
        engine: str | None = None,
        version: str | None = None,
    ) -> Classification:
        update: dict[str, Any] = {"engine": engine or self.name, "engine_version": version or self.version}
        tag = f"model:{self.model.version}" + ("/fast" if stage == "fast" else "")
        score = a.sentiment.score
        heads = {
            h.name.removeprefix(FAST): h
            for h in self.model.heads.values()
            if h.name.startswith(FAST) == (stage == "fast")
        }
        if "sentiment" in predictions:
            probs, evidence = predictions["sentiment"]
            p = dict(zip(heads["sentiment"].labels, (float(x) for x in probs), strict=True))
            label = max(p, key=p.__getitem__)
            score = max(-1.0, min(1.0, p["positive"] - p["negative"]))
            update |= {
                "sentiment": Sentiment(label),
                "sentiment_score": round(score, 4),
                "sentiment_confidence": round(p[label], 3),
                "sentiment_evidence": [
                    *evidence,
                    f"{tag} p(neg)={p['negative']:.2f} p(neu)={p['neutral']:.2f} p(pos)={p['positive']:.2f}",
                ],
            }
        intent = a.intent.intent
        if "intent" in predictions:
            probs, evidence = predictions["intent"]
            labels = heads["intent"].labels
            top = int(np.argmax(probs))
            intent = Intent(labels[top])
            update |= {
                "intent": intent,
                "intent_confidence": round(float(probs[top]), 3),
                "intent_evidence": [*evidence, f"{tag} p={float(probs[top]):.2f}"],
            }
        if "departments" in predictions:
            probs, _ = predictions["departments"]
            head = heads["departments"]
            thresholds = head.thresholds if head.thresholds is not None else np.full(len(head.labels), 0.5)
            update["departments"] = sorted(
                (
                    DepartmentLabel(
                        name=Department(label),
                        confidence=round(float(p), 3),
                        evidence=[f"{tag} p={float(p):.2f}"],
                    )
                    for label, p, t in zip(head.labels, probs, thresholds, strict=True)
                    if p >= t
                ),
                key=lambda d: -d.confidence,
            )
        unread = unreadable(a)
        if unread is not None:
            # The heads answer for any input; where there is nothing the model learned to read, the
            # answer says so with a low confidence instead of sounding sure.
            for name in ("sentiment", "intent"):
                if f"{name}_confidence" in update:
                    update[f"{name}_confidence"] = min(update[f"{name}_confidence"], LOW_CONFIDENCE)
                    update[f"{name}_evidence"] = [unread, *update[f"{name}_evidence"]]
        urgency = estimate_urgency(
            a.tokens, a.mention, topics=a.topic_names, score=score, intent=intent, present=a.present
        )
        update |= {"urgency": urgency.urgency, "urgency_evidence": urgency.evidence}
        return self.rules.classification(a, **update)


# The languages of the training data (English, and the project's mentions in these six).
TRAINED_LANGUAGES = frozenset({"en", "de", "fr", "es", "it", "nl", "pt"})
LOW_CONFIDENCE = 0.3


def unreadable(a: Analysis) -> str | None:
    """Why the model cannot read this text (None: it can): no words, garbled, or another language."""
    words = sum(1 for t in a.tokens[:50] if t[:1].isalpha())
    if words < 2:
        return "no words to read"
    share = letter_share(a.text)
    if share < GARBLED:
        return f"garbled text: {share:.0%} letters"
    if a.language.language not in TRAINED_LANGUAGES:
        return f"language {a.language.language}: the model was not trained on it"
    return None


@dataclass(frozen=True)
class CascadePolicy:
    """When the fast stage's answer stands: its top sentiment has at least `sentiment_min` probability and
    every department's probability is at least `department_margin` from its threshold. Chosen when
    training, on validation examples, as the cheapest policy whose answers agree with the accurate
    stage's on at least the target share (the artifact's `meta.cascade`)."""

    sentiment_min: float = 0.9
    department_margin: float = 0.3

    def settles(self, prediction: Prediction, thresholds: FloatArray | None) -> bool:
        sentiment = prediction.get("sentiment")
        if sentiment is not None and float(sentiment[0].max()) < self.sentiment_min:
            return False
        departments = prediction.get("departments")
        if departments is not None:
            probs = departments[0]
            t = thresholds if thresholds is not None else np.full(len(probs), 0.5, np.float32)
            if not (probs >= t).any():
                return False  # no department: the accurate stage decides where it goes
            if float(np.abs(probs - t).min()) < self.department_margin:
                return False
        return True


class CascadeEngine:
    """Both stages of one model: the fast heads (n-grams, lexicon and taxonomy features) answer where
    they are sure, and the accurate heads (the same features plus the fine-tuned encoder's sentence
    vector) answer the rest, their texts encoded on the encoder's threads while the next are read."""

    name = "cascade"
    # Mentions per step of the fast stage: small enough that the encoder starts early, large enough that
    # its threads have several texts to share.
    CHUNK = 16

    def __init__(self, learned: LearnedEngine, *, policy: CascadePolicy | None = None) -> None:
        if not learned.model.has_fast_stage:
            raise ConfigError(
                f"model {learned.model.version} has no fast stage for the cascade: train it with "
                "`mention-router train --finetune` (or use MR_CLASSIFIER_ENGINE=learned)"
            )
        self.learned = learned
        chosen = learned.model.meta.get("cascade") or {}
        self.policy = policy or CascadePolicy(
            sentiment_min=float(chosen.get("sentiment_min", 0.9)),
            department_margin=float(chosen.get("department_margin", 0.3)),
        )
        self.escalated = 0
        self.classified = 0
        self.version = f"cascade({learned.version})"
        departments = learned.model.heads.get(f"{FAST}departments")
        self._thresholds = departments.thresholds if departments is not None else None

    def use_taxonomy(self, taxonomy: Taxonomy) -> None:
        self.learned.use_taxonomy(taxonomy)
        self.version = f"cascade({self.learned.version})"

    def classify(self, mention: Mention) -> Classification:
        return self.classify_many([mention])[0]

    def classify_many(self, mentions: list[Mention]) -> list[Classification]:
        """`CHUNK` mentions at a time: the fast stage reads a chunk while the encoder's threads encode
        the texts the chunks before it left unsure (each text alone, so the labels are those of one
        call per text)."""
        learned, model = self.learned, self.learned.model
        analyses: list[Analysis] = []
        fast: list[Prediction] = []
        pending: list[tuple[list[int], Future[FloatArray]]] = []
        for start in range(0, len(mentions), self.CHUNK):
            part = [learned.rules.analyse(m) for m in mentions[start : start + self.CHUNK]]
            predictions = model.predict_many(part, stage="fast")
            unsure = [
                start + i for i, p in enumerate(predictions) if not self.policy.settles(p, self._thresholds)
            ]
            analyses += part
            fast += predictions
            if unsure:
                pending.append((unsure, model.embed_later([analyses[i] for i in unsure])))
        accurate: dict[int, Prediction] = {}
        for unsure, vectors in pending:
            chosen = [analyses[i] for i in unsure]
            accurate.update(zip(unsure, model.predict_many(chosen, embedded=vectors.result()), strict=True))
        self.classified += len(mentions)
        self.escalated += len(accurate)
        return [
            learned.from_prediction(
                a,
                accurate[i] if i in accurate else fast[i],
                stage="accurate" if i in accurate else "fast",
                engine=self.name,
                version=self.version,
            )
            for i, a in enumerate(analyses)
        ]
