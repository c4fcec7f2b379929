"""The learned engine: linear heads over word n-grams and the rule engine's own scores, offline, numpy only.

Features of a text (`features`): word unigrams (marked `neg_` inside a negation's scope), bigrams, a
five-letter prefix of longer words ("~crash" for crashes/crashed/crashing), and dense ones from the
rule engine: the lexicon's compound score and its positive and negative sums, question and exclamation
marks, and one indicator per taxonomy topic. The n-gram part is L2-normalised; the dense part is not.

Heads, each a logistic regression trained by `mention-router train` (shared.classify.training):
`sentiment` (negative/neutral/positive), `departments` (one yes/no per department) and `intent`.

The artifact is one `.npz` file: the vocabulary, one weight matrix and bias per head, and a JSON
metadata record (version, what it was trained on, the command). Its version goes into every event.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from shared.classify.engine import Analysis, RuleEngine
from shared.classify.intent import estimate_urgency
from shared.classify.taxonomy import Taxonomy
from shared.errors import ConfigError
from shared.events import Classification, Department, DepartmentLabel, Intent, Mention, Sentiment

ARTIFACT_FORMAT = 1
SENTIMENTS = ("negative", "neutral", "positive")
DEPARTMENT_NAMES = tuple(d.value for d in Department)
INTENTS = tuple(i.value for i in Intent)

_NEGATORS = frozenset(
    [
        "not",
        "no",
        "never",
        "nothing",
        "nobody",
        "none",
        "without",
        "cannot",
        "cant",
        "dont",
        "doesnt",
        "didnt",
        "isnt",
        "wasnt",
        "wont",
        "hardly",
    ]
)
_SCOPE_END = frozenset(".,;:!?")
_KEEP_PUNCT = frozenset("?!")

FloatArray = npt.NDArray[np.float32]


def features(a: Analysis) -> tuple[list[str], list[tuple[str, float]]]:
    """(sparse feature names, dense (name, value) pairs) of an analysed mention."""
    words: list[str] = []
    negated = False
    prev = ""
    for tok in a.tokens[:1500]:
        if tok in _SCOPE_END:
            negated = False
            if tok in _KEEP_PUNCT:
                words.append(tok)
            prev = tok
            continue
        if not tok[0].isalnum():
            prev = tok
            continue
        if tok == "t" and prev == "'":
            negated = True  # "doesn't", "isn't": split by the tokenizer
            prev = tok
            continue
        words.append(f"neg_{tok}" if negated else tok)
        if tok in _NEGATORS:
            negated = True
        prev = tok
    sparse = set(words)
    plain = [w[4:] if w.startswith("neg_") else w for w in words]
    sparse.update(f"{x} {y}" for x, y in itertools.pairwise(plain))
    sparse.update(f"~{w[:5]}" for w in plain if len(w) > 6)
    s = a.sentiment
    dense = [
        ("__lex_score", s.score),
        ("__lex_pos", min(1.0, s.positive / 8)),
        ("__lex_neg", min(1.0, -s.negative / 8)),
        ("__question", 1.0 if "?" in a.present else 0.0),
        ("__exclaim", 1.0 if "!" in a.present else 0.0),
        *((f"__topic_{t}", 1.0) for t in a.topic_names),
    ]
    return list(sparse), dense


EMBEDDING_SCALE = 2.0


def embedding_features(vector: FloatArray) -> list[tuple[str, float]]:
    """A sentence vector as dense features (scaled to weigh like the n-gram part)."""
    return [(f"__emb_{i}", float(v) * EMBEDDING_SCALE) for i, v in enumerate(vector)]


@dataclass
class Head:
    name: str
    labels: tuple[str, ...]
    multi_label: bool
    weights: FloatArray  # (n_features, n_labels)
    bias: FloatArray  # (n_labels,)
    thresholds: FloatArray | None = None  # multi-label: the probability above which a label is given


@dataclass
class LinearModel:
    version: str
    vocabulary: dict[str, int]
    heads: dict[str, Head]
    meta: dict[str, Any] = field(default_factory=dict)
    # A fine-tuned encoder's transformer layers (float16; `mention-router train --finetune`), for a model
    # just trained; a loaded model leaves them in its file (`source`) and reads them when it builds its
    # encoder, so that a running service does not hold a second, float16 copy (21 MB) of them.
    encoder_layers: dict[str, npt.NDArray[np.float16]] | None = None
    source: Path | None = None

    def __post_init__(self) -> None:
        self._encoder: Any = None
        self._names = sorted(self.vocabulary, key=self.vocabulary.__getitem__)
        # All heads side by side: one gather of the active features' rows serves every head.
        heads = list(self.heads.values())
        self._weights = np.concatenate([h.weights for h in heads], axis=1) if heads else np.zeros((0, 0))
        self._bias = np.concatenate([h.bias for h in heads]) if heads else np.zeros(0)
        self._slices: list[tuple[Head, int, int]] = []
        start = 0
        for h in heads:
            self._slices.append((h, start, start + len(h.labels)))
            start += len(h.labels)

    @property
    def embedder(self) -> str | None:
        """The sentence encoder whose vectors are features too (None: n-grams and rule scores only)."""
        value = self.meta.get("embedder")
        return str(value) if value else None

    def encoder(self) -> Any:
        """The sentence encoder of this model (built on first use: about 90 MB)."""
        if self._encoder is None:
            from shared.classify.minilm import MiniLM, release_freed_memory, shared_minilm

            tuned = self.tuned_layers()
            self._encoder = MiniLM(tuned=tuned) if tuned else shared_minilm()  # type: ignore[arg-type]
            del tuned  # read for the encoder only: its float16 copy is handed back right away
            release_freed_memory()
        return self._encoder

    def tuned_layers(self) -> dict[str, npt.NDArray[np.float16]] | None:
        """The fine-tuned encoder layers: held (a model just trained) or read from the artifact."""
        if self.encoder_layers is not None or self.source is None:
            return self.encoder_layers
        try:
            with np.load(self.source, allow_pickle=False) as data:
                layers = {k.removeprefix("encoder:"): data[k] for k in data.files if k.startswith("encoder:")}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the encoder layers of model {self.source}: {exc}") from exc
        return layers or None

    def vector(self, a: Analysis) -> tuple[npt.NDArray[np.intp], FloatArray]:
        sparse, dense = features(a)
        if self.embedder:
            dense = dense + embedding_features(self.encoder().encode([a.text])[0])
        vocab = self.vocabulary
        idx = [j for j in map(vocab.get, sparse) if j is not None]
        norm = 1.0 / math.sqrt(len(idx)) if idx else 0.0
        values = [norm] * len(idx)
        for name, value in dense:
            j = vocab.get(name)
            if j is not None and value:
                idx.append(j)
                values.append(value)
        return np.asarray(idx, dtype=np.intp), np.asarray(values, dtype=np.float32)

    def predict(self, a: Analysis) -> dict[str, tuple[FloatArray, list[str]]]:
        """head → (probabilities per label, evidence: the features that pushed the top label most)."""
        idx, values = self.vector(a)
        contrib = self._weights[idx] * values[:, None]  # (active features, all heads' labels)
        logits_all = (contrib.sum(axis=0) + self._bias).tolist()
        out: dict[str, tuple[FloatArray, list[str]]] = {}
        for head, lo, hi in self._slices:
            logits = logits_all[lo:hi]
            # A handful of numbers: plain floats beat numpy's per-call cost here.
            if head.multi_label:
                probs = [1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, x)))) for x in logits]
            else:
                top_logit = max(logits)
                exps = [math.exp(x - top_logit) for x in logits]
                total = sum(exps)
                probs = [e / total for e in exps]
            top = max(range(len(probs)), key=probs.__getitem__)
            evidence: list[str] = []
            if len(idx):
                column = contrib[:, lo + top]
                best = np.argsort(-column)[:3] if len(column) > 3 else np.argsort(-column)
                evidence = [f"feature:{self._names[int(idx[k])]}" for k in best if column[k] > 0]
            out[head.name] = (np.asarray(probs, dtype=np.float32), evidence)
        return out

    # --- the artifact -------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {
            "vocabulary": np.asarray(self._names, dtype=np.str_),
        }
        heads_meta = {}
        for name, head in self.heads.items():
            # float16 halves the file; the weights of a regularised linear model lose nothing that shows.
            arrays[f"{name}.weights"] = head.weights.astype(np.float16)
            arrays[f"{name}.bias"] = head.bias.astype(np.float32)
            if head.thresholds is not None:
                arrays[f"{name}.thresholds"] = head.thresholds.astype(np.float32)
            heads_meta[name] = {"labels": list(head.labels), "multi_label": head.multi_label}
        for name, tensor in (self.tuned_layers() or {}).items():
            arrays[f"encoder:{name}"] = tensor.astype(np.float16)
        meta = {**self.meta, "format": ARTIFACT_FORMAT, "version": self.version, "heads": heads_meta}
        arrays["meta"] = np.asarray(json.dumps(meta, sort_keys=True))
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> LinearModel:
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                if meta.get("format") != ARTIFACT_FORMAT:
                    raise ConfigError(
                        f"model {path}: artifact format {meta.get('format')!r}, expected {ARTIFACT_FORMAT}"
                    )
                names = [str(n) for n in data["vocabulary"]]
                heads = {}
                for name, spec in meta["heads"].items():
                    thresholds = data[f"{name}.thresholds"] if f"{name}.thresholds" in data.files else None
                    heads[name] = Head(
                        name=name,
                        labels=tuple(spec["labels"]),
                        multi_label=bool(spec["multi_label"]),
                        weights=data[f"{name}.weights"].astype(np.float32),
                        bias=data[f"{name}.bias"].astype(np.float32),
                        thresholds=None if thresholds is None else thresholds.astype(np.float32),
                    )
        except (OSError, KeyError, ValueError) as exc:
            raise ConfigError(f"cannot load model {path}: {exc}") from exc
        for head in heads.values():
            if head.weights.shape != (len(names), len(head.labels)):
                raise ConfigError(f"model {path}: head {head.name} does not fit the vocabulary")
        return cls(
            version=str(meta["version"]),
            vocabulary={n: i for i, n in enumerate(names)},
            heads=heads,
            meta=meta,
            source=path,
        )


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
        return self.from_analysis(self.rules.analyse(mention))

    def from_analysis(
        self, a: Analysis, *, engine: str | None = None, version: str | None = None
    ) -> Classification:
        predictions = self.model.predict(a)
        update: dict[str, Any] = {"engine": engine or self.name, "engine_version": version or self.version}
        tag = f"model:{self.model.version}"
        score = a.sentiment.score
        if "sentiment" in predictions:
            probs, evidence = predictions["sentiment"]
            p = dict(zip(self.model.heads["sentiment"].labels, (float(x) for x in probs), strict=True))
            label = max(p, key=p.__getitem__)
            score = max(-1.0, min(1.0, p["positive"] - p["negative"]))
            update |= {
                "sentiment": Sentiment(label),
                "sentiment_score": round(score, 4),
                "sentiment_confidence": round(p[label], 3),
                "sentiment_evidence": [
                    f"{tag} p(neg)={p['negative']:.2f} p(neu)={p['neutral']:.2f} p(pos)={p['positive']:.2f}",
                    *evidence,
                    *a.sentiment.evidence[:3],
                ],
            }
        intent = a.intent.intent
        if "intent" in predictions:
            probs, evidence = predictions["intent"]
            labels = self.model.heads["intent"].labels
            top = int(np.argmax(probs))
            intent = Intent(labels[top])
            update |= {
                "intent": intent,
                "intent_confidence": round(float(probs[top]), 3),
                "intent_evidence": [f"{tag} p={float(probs[top]):.2f}", *evidence, *a.intent.evidence[:2]],
            }
        if "departments" in predictions:
            probs, _ = predictions["departments"]
            head = self.model.heads["departments"]
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
        urgency = estimate_urgency(
            a.tokens, a.mention, topics=a.topic_names, score=score, intent=intent, present=a.present
        )
        update |= {"urgency": urgency.urgency, "urgency_evidence": urgency.evidence}
        return self.rules.classification(a, **update)


class CascadeEngine:
    """The rule engine, and the model only for the mentions the rules are unsure of: a sentiment
    confidence below the threshold, or no topic (so no routing rule but the fallback would apply)."""

    name = "cascade"

    def __init__(self, learned: LearnedEngine, *, threshold: float = 0.7) -> None:
        self.learned = learned
        self.threshold = threshold
        self.escalated = 0
        self.classified = 0
        self.version = f"cascade({learned.rules.version}|{learned.model.version})"

    def use_taxonomy(self, taxonomy: Taxonomy) -> None:
        self.learned.use_taxonomy(taxonomy)
        self.version = f"cascade({self.learned.rules.version}|{self.learned.model.version})"

    def classify(self, mention: Mention) -> Classification:
        a = self.learned.rules.analyse(mention)
        self.classified += 1
        if a.sentiment.confidence >= self.threshold and a.topics:
            return self.learned.rules.classification(a, engine=self.name, engine_version=self.version)
        self.escalated += 1
        return self.learned.from_analysis(a, engine=self.name, version=self.version)


def load_model(path: Path) -> LinearModel:
    if not path.exists():
        raise ConfigError(
            f"model {path} does not exist: train one with `mention-router train --out {path}` "
            "or set MR_CLASSIFIER_MODEL"
        )
    return LinearModel.load(path)
