"""Per-label precision, recall and F1, macro-F1 and a confusion matrix, for single-label fields
(sentiment, intent) and multi-label ones (departments, topics)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

NONE = "(none)"


@dataclass
class LabelScore:
    label: str
    precision: float
    recall: float
    f1: float
    support: int
    predicted: int


@dataclass
class FieldReport:
    name: str
    multi_label: bool
    n: int
    labels: list[LabelScore]
    macro_f1: float
    micro_f1: float
    accuracy: float  # single label: accuracy; multi-label: exact match of the label sets
    # confusion[gold][predicted]; for multi-label fields every gold label of an example is paired with
    # every predicted one, and NONE stands in for an empty set
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "field": self.name,
            "multi_label": self.multi_label,
            "n": self.n,
            "macro_f1": round(self.macro_f1, 4),
            "micro_f1": round(self.micro_f1, 4),
            "accuracy" if not self.multi_label else "exact_match": round(self.accuracy, 4),
            "labels": {
                s.label: {
                    "precision": round(s.precision, 4),
                    "recall": round(s.recall, 4),
                    "f1": round(s.f1, 4),
                    "support": s.support,
                    "predicted": s.predicted,
                }
                for s in self.labels
            },
            "confusion": self.confusion,
        }


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def score_field(
    name: str,
    gold: Sequence[str | Sequence[str]],
    predicted: Sequence[str | Sequence[str]],
    *,
    labels: Sequence[str] | None = None,
) -> FieldReport:
    """Scores one field; `gold[i]`/`predicted[i]` are a label (single) or a list of labels (multi)."""
    if len(gold) != len(predicted):
        raise ValueError("gold and predicted differ in length")
    multi = any(not isinstance(g, str) for g in gold)
    gsets = [frozenset([g]) if isinstance(g, str) else frozenset(g) for g in gold]
    psets = [frozenset([p]) if isinstance(p, str) else frozenset(p) for p in predicted]
    if labels is None:
        labels = sorted(set().union(*gsets)) if gsets else []
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    confusion: dict[str, Counter[str]] = {}
    exact = 0
    for g, p in zip(gsets, psets, strict=True):
        exact += g == p
        for label in g & p:
            tp[label] += 1
        for label in p - g:
            fp[label] += 1
        for label in g - p:
            fn[label] += 1
        for gl in g or {NONE}:
            row = confusion.setdefault(gl, Counter())
            for pl in p or {NONE}:
                row[pl] += 1
    scores = []
    for label in labels:
        p_, r_, f_ = _prf(tp[label], fp[label], fn[label])
        scores.append(LabelScore(label, p_, r_, f_, tp[label] + fn[label], tp[label] + fp[label]))
    # A label neither in the gold nor predicted has no F1 to speak of; it does not drag the macro down.
    counted = [s for s in scores if s.support or s.predicted]
    macro = sum(s.f1 for s in counted) / len(counted) if counted else 0.0
    _, _, micro = _prf(
        sum(tp[label] for label in labels),
        sum(fp[label] for label in labels),
        sum(fn[label] for label in labels),
    )
    return FieldReport(
        name=name,
        multi_label=multi,
        n=len(gsets),
        labels=scores,
        macro_f1=macro,
        micro_f1=micro,
        accuracy=exact / len(gsets) if gsets else 0.0,
        confusion={g: dict(sorted(row.items())) for g, row in sorted(confusion.items())},
    )


def format_report(reports: Iterable[FieldReport]) -> str:
    """A plain-text report: per-label table, macro-F1, and the confusion matrix of each field."""
    out: list[str] = []
    for r in reports:
        kind = "multi-label" if r.multi_label else "single-label"
        acc = "exact match" if r.multi_label else "accuracy"
        out.append(
            f"== {r.name} ({kind}, n={r.n}) macro-F1 {r.macro_f1:.3f}  "
            f"micro-F1 {r.micro_f1:.3f}  {acc} {r.accuracy:.3f}"
        )
        out.append(f"  {'label':<18}{'precision':>10}{'recall':>8}{'f1':>8}{'support':>9}{'predicted':>10}")
        for s in r.labels:
            out.append(
                f"  {s.label:<18}{s.precision:>10.3f}{s.recall:>8.3f}{s.f1:>8.3f}"
                f"{s.support:>9}{s.predicted:>10}"
            )
        cols = sorted({c for row in r.confusion.values() for c in row} | {s.label for s in r.labels})
        width = max(8, *(len(c) + 1 for c in cols))
        out.append("  confusion (rows gold, columns predicted):")
        out.append("  " + " " * 18 + "".join(f"{c[: width - 1]:>{width}}" for c in cols))
        for g in sorted(r.confusion):
            row = r.confusion[g]
            out.append(f"  {g:<18}" + "".join(f"{row.get(c, 0):>{width}}" for c in cols))
        out.append("")
    return "\n".join(out)
