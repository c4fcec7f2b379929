"""The learned model: what it reads of a text, and its artifact.

Features of a text (`features`): word unigrams (marked `neg_` inside a negation's scope), bigrams, a
five-letter prefix of longer words ("~crash" for crashes/crashed/crashing), and dense ones from the
rule engine: the lexicon's compound score and its positive and negative sums, question and exclamation
marks, and one indicator per taxonomy topic. The n-gram part is L2-normalised; the dense part is not.
With a fine-tuned encoder, its sentence vector is a dense feature too (`embedding_features`).

Heads, each a logistic regression trained by `mention-router train` (shared.classify.training):
`sentiment` (negative/neutral/positive), `departments` (one yes/no per department) and `intent`; a
fine-tuned model also has the cascade's `fast.*` heads, which read no encoder.

The artifact is one `.npz` file: the vocabulary, one weight matrix and bias per head, and a JSON
metadata record (version, what it was trained on, the command); the encoder's int8 ONNX graph sits
beside it, checked by its SHA-256. Its version goes into every event.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from shared.classify.engine import Analysis
from shared.errors import ConfigError
from shared.events import Department, Intent

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

    threads: int = 2  # texts encoded at once, each on one thread (as MR_CLASSIFIER_THREADS)
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

    def embed_later(self, analyses: list[Analysis]) -> Future[FloatArray]:
        """The sentence vectors of these analyses, computed on the encoder's threads while the caller
        goes on; pass them to `predict_many(..., embedded=)`."""
        return cast("Future[FloatArray]", self.encoder().submit([a.text for a in analyses]))

    def vectors(
        self, analyses: list[Analysis], *, stage: str = "accurate", embedded: FloatArray | None = None
    ) -> list[tuple[npt.NDArray[np.intp], FloatArray]]:
        """The active features of each analysis (indices, values); the sentence vectors of the whole
        batch are computed in one call to the encoder (or given: `embed_later`)."""
        feats = [features(a) for a in analyses]
        if stage == "accurate" and self.embedder:
            if embedded is None:
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

    def predict_many(
        self, analyses: list[Analysis], *, stage: str = "accurate", embedded: FloatArray | None = None
    ) -> list[Prediction]:
        """Per analysis: head → (probabilities per label, evidence: the words and phrases that pushed
        the top label most). `stage="fast"`: the fast heads, without the sentence encoder."""
        group = self._groups[stage]
        if not group.heads:
            raise ConfigError(f"model {self.version} has no {stage} heads")
        vectors = self.vectors(analyses, stage=stage, embedded=embedded)
        return [
            group.predict(a, idx, values, self._names)
            for a, (idx, values) in zip(analyses, vectors, strict=True)
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
