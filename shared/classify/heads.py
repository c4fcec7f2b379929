"""Fitting the model's heads: the design matrix, logistic regression per head with its choices made on
the validation rows, corpus and class weights, distillation of the fast heads and the cascade's policy."""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.classify.batch import to_mention
from shared.classify.corpus import Example
from shared.classify.engine import Analysis, RuleEngine
from shared.classify.model import (
    DEPARTMENT_NAMES,
    INTENTS,
    SENTIMENTS,
    Head,
    embedding_features,
    features,
)

log = logging.getLogger(__name__)


# The share of its validation examples on which the cascade must answer as the accurate stage does.
CASCADE_AGREEMENT = 0.95


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
class HeadFits:
    heads: dict[str, Head]
    report: dict[str, Any]


def fit_heads(
    X: Any, examples: list[Example], weights: np.ndarray, is_val: np.ndarray, *, prefix: str = ""
) -> HeadFits:
    """Sentiment, departments and intent heads on the design matrix X: the regularisation and the
    department thresholds chosen on the validation rows, then each head fitted on every row."""
    report: dict[str, Any] = {}
    heads = {
        f"{prefix}sentiment": _sentiment_head(X, examples, weights, is_val, f"{prefix}sentiment", report)
    }
    heads[f"{prefix}departments"] = _departments_head(
        X, examples, weights, is_val, f"{prefix}departments", report
    )
    intent = _intent_head(X, examples, weights, f"{prefix}intent", report)
    if intent is not None:
        heads[f"{prefix}intent"] = intent
    return HeadFits(heads, report)


def _sentiment_head(
    X: Any,
    examples: list[Example],
    weights: np.ndarray,
    is_val: np.ndarray,
    name: str,
    report: dict[str, Any],
) -> Head:
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
    return Head(name, SENTIMENTS, False, W, b)


def _departments_head(
    X: Any,
    examples: list[Example],
    weights: np.ndarray,
    is_val: np.ndarray,
    name: str,
    report: dict[str, Any],
) -> Head:
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
    return Head(
        name,
        DEPARTMENT_NAMES,
        True,
        np.stack([w_ for w_, _ in fits], axis=1),
        np.asarray([b_ for _, b_ in fits], np.float32),
        np.asarray(thresholds, np.float32),
    )


def _intent_head(
    X: Any, examples: list[Example], weights: np.ndarray, name: str, report: dict[str, Any]
) -> Head | None:
    """Intent: only the project's set and corrections carry it; kept only if it beats the rules on
    five-fold cross-validation over those examples."""
    rng = random.Random(13)
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
        return Head(name, INTENTS, False, W, b)
    return None


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


def _binary_f1(gold: np.ndarray, pred: np.ndarray) -> float:
    tp = float(np.sum((gold == 1) & pred))
    fp = float(np.sum((gold == 0) & pred))
    fn = float(np.sum((gold == 1) & ~pred))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0
