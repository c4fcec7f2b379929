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

import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from shared.classify.engine import GARBLED, Analysis, RuleEngine, letter_share
from shared.classify.intent import estimate_urgency
from shared.classify.taxonomy import Taxonomy
from shared.errors import ConfigError
from shared.events import Classification, Department, DepartmentLabel, Intent, Mention, Sentiment

ARTIFACT_FORMAT = 2
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
    weights: npt.NDArray[Any]  # (n_features, n_labels): float32 when fitted, float16 when loaded
    bias: FloatArray  # (n_labels,)
    thresholds: FloatArray | None = None  # multi-label: the probability above which a label is given


# Heads whose name starts with this read no sentence vector: the cascade's fast stage.
FAST = "fast."
Prediction = dict[str, tuple[FloatArray, list[str]]]


@dataclass
class EncoderOptions:
    """How the service runs the artifact's encoder (MR_CLASSIFIER_THREADS, MR_CLASSIFIER_MAX_TOKENS)."""

    threads: int = 1
    max_tokens: int | None = None  # None: the length the model was trained with
    # Texts per encoder run: one, so that a text's labels never depend on the texts beside it (see
    # OnnxEncoder.encode); as fast as batches on this CPU.
    batch_size: int = 1


@dataclass
class LinearModel:
    version: str
    vocabulary: dict[str, int]
    heads: dict[str, Head]
    meta: dict[str, Any] = field(default_factory=dict)
    # A fine-tuned encoder (`mention-router train --finetune`): its int8 ONNX graph and its tokenizer, for
    # a model just trained. A saved model keeps the graph beside its .npz (`<name>.onnx`, checked against
    # the SHA-256 in its metadata) and ONNX Runtime reads it from there: Python never holds a copy.
    encoder_onnx: bytes | None = None
    tokenizer_json: str | None = None
    source: Path | None = None
    encoder_options: EncoderOptions = field(default_factory=EncoderOptions)

    def __post_init__(self) -> None:
        self._encoder: Any = None
        self._names = sorted(self.vocabulary, key=self.vocabulary.__getitem__)
        self._groups = {
            stage: _HeadGroup(
                [h for h in self.heads.values() if h.name.startswith(FAST) == (stage == "fast")]
            )
            for stage in ("fast", "accurate")
        }

    @property
    def embedder(self) -> str | None:
        """The sentence encoder whose vectors are features too (None: n-grams and rule scores only)."""
        value = self.meta.get("embedder")
        return str(value) if value else None

    @property
    def has_fast_stage(self) -> bool:
        return bool(self._groups["fast"].heads)

    def encoder(self) -> Any:
        """The sentence encoder of this model (built on first use)."""
        if self._encoder is None:
            from shared.classify.encoder import OnnxEncoder, release_freed_memory

            graph, tokenizer = self.encoder_files()
            spec = self.meta.get("encoder") or {}
            opts = self.encoder_options
            self._encoder = OnnxEncoder(
                graph,
                tokenizer,
                max_tokens=opts.max_tokens or int(spec.get("max_tokens", 128)),
                head_tokens=None if opts.max_tokens else spec.get("head_tokens"),
                threads=opts.threads,
                batch_size=opts.batch_size,
            )
            del graph  # the session holds its own copy
            release_freed_memory()
        return self._encoder

    def encoder_files(self) -> tuple[bytes | Path, str]:
        """(the encoder's ONNX graph, or the path of its file; its tokenizer.json)."""
        if self.encoder_onnx is not None and self.tokenizer_json is not None:
            return self.encoder_onnx, self.tokenizer_json
        if self.source is None:
            raise ConfigError(f"model {self.version} has no encoder")
        graph = encoder_path(self.source)
        spec = self.meta.get("encoder") or {}
        fix = f"train it again (`make train`) or restore {graph.name} beside {self.source.name}"
        try:
            with self.source.open("rb") as fh, np.load(fh, allow_pickle=False) as data:
                tokenizer = str(data["encoder.tokenizer"])
            digest = _sha256(graph)
        except (OSError, KeyError, ValueError) as exc:
            raise ConfigError(f"cannot read the encoder of model {self.source}: {exc}; {fix}") from exc
        if digest != spec.get("onnx_sha256"):
            raise ConfigError(
                f"model {self.source}: the encoder {graph} is not the one the model was trained with "
                f"(SHA-256 {digest[:12]}…, expected {str(spec.get('onnx_sha256'))[:12]}…): {fix}"
            )
        return graph, tokenizer

    def vectors(
        self, analyses: list[Analysis], *, stage: str = "accurate"
    ) -> list[tuple[npt.NDArray[np.intp], FloatArray]]:
        """The active features of each analysis (indices, values); the sentence vectors of the whole
        batch are computed in one call to the encoder."""
        feats = [features(a) for a in analyses]
        if stage == "accurate" and self.embedder:
            embedded = self.encoder().encode([a.text for a in analyses])
            feats = [
                (sp, dense + embedding_features(v)) for (sp, dense), v in zip(feats, embedded, strict=True)
            ]
        vocab = self.vocabulary
        out = []
        for sparse, dense in feats:
            idx = [j for j in map(vocab.get, sparse) if j is not None]
            norm = 1.0 / math.sqrt(len(idx)) if idx else 0.0
            values = [norm] * len(idx)
            for name, value in dense:
                j = vocab.get(name)
                if j is not None and value:
                    idx.append(j)
                    values.append(value)
            out.append((np.asarray(idx, dtype=np.intp), np.asarray(values, dtype=np.float32)))
        return out

    def predict(self, a: Analysis, *, stage: str = "accurate") -> Prediction:
        return self.predict_many([a], stage=stage)[0]

    def predict_many(self, analyses: list[Analysis], *, stage: str = "accurate") -> list[Prediction]:
        """Per analysis: head → (probabilities per label, evidence: the words and phrases that pushed
        the top label most). `stage="fast"`: the fast heads, without the sentence encoder."""
        group = self._groups[stage]
        if not group.heads:
            raise ConfigError(f"model {self.version} has no {stage} heads")
        return [
            group.predict(a, idx, values, self._names)
            for a, (idx, values) in zip(analyses, self.vectors(analyses, stage=stage), strict=True)
        ]

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
        meta = {**self.meta, "format": ARTIFACT_FORMAT, "version": self.version, "heads": heads_meta}
        if self.embedder:
            graph, tokenizer = self.encoder_files()
            data = graph.read_bytes() if isinstance(graph, Path) else graph
            target = encoder_path(path)
            if not (isinstance(graph, Path) and graph.resolve() == target.resolve()):
                tmp_graph = target.with_suffix(".tmp.onnx")
                tmp_graph.write_bytes(data)
                tmp_graph.replace(target)
            arrays["encoder.tokenizer"] = np.asarray(tokenizer)
            meta["encoder"] = {
                **meta.get("encoder", {}),
                "file": target.name,
                "onnx_sha256": hashlib.sha256(data).hexdigest(),
                "onnx_bytes": len(data),
            }
        arrays["meta"] = np.asarray(json.dumps(meta, sort_keys=True))
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path, *, encoder_options: EncoderOptions | None = None) -> LinearModel:
        fix = (
            f"train it again (`make train`, or `mention-router train --out {path}`) or point "
            "MR_CLASSIFIER_MODEL at a complete artifact"
        )
        try:
            # Opened here, not by np.load: it leaves the file open when the zip is truncated.
            with path.open("rb") as fh, np.load(fh, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                if meta.get("format") != ARTIFACT_FORMAT:
                    raise ConfigError(
                        f"model {path}: artifact format {meta.get('format')!r}, this version reads "
                        f"format {ARTIFACT_FORMAT}: {fix}"
                    )
                names = [str(n) for n in data["vocabulary"]]
                heads = {}
                for name, spec in meta["heads"].items():
                    thresholds = data[f"{name}.thresholds"] if f"{name}.thresholds" in data.files else None
                    heads[name] = Head(
                        name=name,
                        labels=tuple(spec["labels"]),
                        multi_label=bool(spec["multi_label"]),
                        weights=data[f"{name}.weights"],  # float16: the group's matrix is made of them
                        bias=data[f"{name}.bias"].astype(np.float32),
                        thresholds=None if thresholds is None else thresholds.astype(np.float32),
                    )
                if meta.get("embedder") and (
                    "encoder.tokenizer" not in data.files or not encoder_path(path).is_file()
                ):
                    raise ConfigError(
                        f"model {path}: the encoder ({encoder_path(path).name} and the tokenizer) is "
                        f"missing: {fix}"
                    )
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"cannot load model {path} ({type(exc).__name__}: {exc}): {fix}") from exc
        for head in heads.values():
            if head.weights.shape != (len(names), len(head.labels)):
                raise ConfigError(f"model {path}: head {head.name} does not fit the vocabulary: {fix}")
        return cls(
            version=str(meta["version"]),
            vocabulary={n: i for i, n in enumerate(names)},
            heads=heads,
            meta=meta,
            source=path,
            encoder_options=encoder_options or EncoderOptions(),
        )


class _HeadGroup:
    """Heads side by side: one gather of the active features' rows serves every head of the group. The
    weights are held once, in float16 (as saved: a regularised linear model loses nothing that shows),
    and each head's weights become a view of its columns."""

    def __init__(self, heads: list[Head]) -> None:
        self.heads = heads
        self.weights = (
            np.concatenate([h.weights for h in heads], axis=1).astype(np.float16)
            if heads
            else np.zeros((0, 0), np.float16)
        )
        self.bias = np.concatenate([h.bias for h in heads]) if heads else np.zeros(0)
        self.slices: list[tuple[Head, str, int, int]] = []
        start = 0
        for h in heads:
            h.weights = self.weights[:, start : start + len(h.labels)]
            self.slices.append((h, h.name.removeprefix(FAST), start, start + len(h.labels)))
            start += len(h.labels)

    def predict(
        self, a: Analysis, idx: npt.NDArray[np.intp], values: FloatArray, names: list[str]
    ) -> Prediction:
        contrib = self.weights[idx].astype(np.float32) * values[:, None]  # (active features, all labels)
        logits_all = (contrib.sum(axis=0) + self.bias).tolist()
        out: Prediction = {}
        for head, name, lo, hi in self.slices:
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
                evidence = readable_evidence(a, contrib[:, lo + top], idx, names)
            out[name] = (np.asarray(probs, dtype=np.float32), evidence)
        return out


def readable_evidence(
    a: Analysis, column: npt.NDArray[Any], idx: npt.NDArray[np.intp], names: list[str], *, limit: int = 3
) -> list[str]:
    """The words and phrases of the text that pushed a label most, as `word:<text>` (what the desk
    highlights): n-gram features only (a sentence vector and the lexicon's scores are not words),
    negated words as `not <word>`, a five-letter prefix as the word of the text it stands for."""
    out: list[str] = []
    for k in np.argsort(-column):
        if column[k] <= 0 or len(out) >= limit:
            break
        name = names[int(idx[k])]
        if name.startswith("__") or name in {"?", "!"}:
            continue
        if name.startswith("~"):
            prefix = name[1:]
            name = next((t for t in a.tokens if t.startswith(prefix)), prefix)
        elif name.startswith("neg_"):
            name = f"not {name[4:]}"
        phrase = f"word:{name}"
        if phrase not in out:
            out.append(phrase)
    return out


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
    vector) answer the rest, in one encoder batch per call."""

    name = "cascade"

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
        learned = self.learned
        analyses = [learned.rules.analyse(m) for m in mentions]
        fast = learned.model.predict_many(analyses, stage="fast")
        unsure = [i for i, p in enumerate(fast) if not self.policy.settles(p, self._thresholds)]
        accurate = dict(
            zip(
                unsure,
                learned.model.predict_many([analyses[i] for i in unsure]) if unsure else [],
                strict=True,
            )
        )
        self.classified += len(mentions)
        self.escalated += len(unsure)
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


def encoder_path(model: Path) -> Path:
    """Where a model's encoder graph lives: beside it, `<name>.onnx`."""
    return model.with_suffix(".onnx")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_model(path: Path, *, encoder_options: EncoderOptions | None = None) -> LinearModel:
    if not path.exists():
        raise ConfigError(
            f"model {path} does not exist: train one with `mention-router train --out {path}` "
            "or set MR_CLASSIFIER_MODEL"
        )
    return LinearModel.load(path, encoder_options=encoder_options)
