"""Batch use of an engine over JSON Lines: `mention-router classify` and `mention-router evaluate`.

Input lines: `id`, `title`, `text`, optional `author`, `source`, `kind` (post/comment), `influence`
(1-3), `language`. Labelled lines (data/labelled/) also carry the gold `sentiment`, `topics`,
`departments` and `intent`.
"""

from __future__ import annotations

import io
import json
import logging
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from shared.classify.engine import Engine
from shared.classify.evaluation import FieldReport, score_field
from shared.events import Classification, Department, Intent, Mention, MentionKind, Sentiment
from shared.routing import RuleSet

log = logging.getLogger(__name__)

_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
GOLD_FIELDS = ("sentiment", "intent", "departments", "topics")


class BadLine(ValueError):
    pass


def read_jsonl(stream: IO[str]) -> Iterator[tuple[int, dict[str, Any] | BadLine]]:
    """(line number, object) per non-blank line; a line that is not a JSON object yields a BadLine."""
    for n, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            yield n, BadLine(f"line {n}: not JSON: {exc}")
            continue
        if not isinstance(row, dict):
            yield n, BadLine(f"line {n}: expected a JSON object")
            continue
        yield n, row


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        rows = []
        for _, row in read_jsonl(f):
            if isinstance(row, BadLine):
                raise row
            rows.append(row)
        return rows


def to_mention(row: dict[str, Any], n: int) -> Mention:
    def text(key: str) -> str:
        value = row.get(key)
        return value if isinstance(value, str) else ""

    kind = row.get("kind")
    influence = row.get("influence")
    language = row.get("language")
    return Mention(
        id=str(row.get("id") or f"line-{n}")[:64],
        source_id=str(row.get("source") or "batch")[:64],
        source_name=text("source"),
        kind=MentionKind.COMMENT if kind == "comment" else MentionKind.POST,
        title=text("title"),
        text=text("text"),
        author=text("author"),
        published_at=_EPOCH,
        language_hint=language if isinstance(language, str) and language else None,
        influence=influence if isinstance(influence, int) and 1 <= influence <= 3 else 1,
    )


def labels_of(c: Classification) -> dict[str, Any]:
    """The labels `classify` writes back, with the confidence and evidence of each."""
    return {
        "sentiment": c.sentiment.value,
        "sentiment_score": c.sentiment_score,
        "sentiment_confidence": c.sentiment_confidence,
        "topics": [t.name for t in c.topics],
        "intent": c.intent.value,
        "intent_confidence": c.intent_confidence,
        "language": c.language,
        "language_confidence": c.language_confidence,
        "urgency": c.urgency,
        "engine": c.engine,
        "engine_version": c.engine_version,
        "evidence": {
            "sentiment": c.sentiment_evidence,
            "topics": {t.name: {"confidence": t.confidence, "evidence": t.evidence} for t in c.topics},
            "intent": c.intent_evidence,
            "language": c.language_evidence,
            "urgency": c.urgency_evidence,
            "suggested_departments": {
                d.name.value: {"confidence": d.confidence, "evidence": d.evidence} for d in c.departments
            },
        },
    }


# Lines classified together: the cascade reads the next mentions while the encoder runs on the unsure
# ones of those before (CascadeEngine.CHUNK at a time), so a long call keeps both cores busy (2,000
# lines: 133/s in calls of 64, 155/s in calls of 1,024). A pipe or a terminal gets its answers 64 lines at
# a time: a stream written slowly (`tail -f … | mention-router classify`) is not held back for 1,024.
BATCH_LINES = 1024
STREAM_BATCH_LINES = 64


def batch_lines_for(source: IO[str]) -> int:
    """How many lines of `source` to classify together: BATCH_LINES for a regular file, else
    STREAM_BATCH_LINES."""
    try:
        regular = stat.S_ISREG(os.fstat(source.fileno()).st_mode)
    except (OSError, ValueError, io.UnsupportedOperation):  # no file descriptor (a StringIO)
        return BATCH_LINES
    return BATCH_LINES if regular else STREAM_BATCH_LINES


def classify_stream(
    engine: Engine, rules: RuleSet | None, source: IO[str], sink: IO[str], *, errors: IO[str]
) -> tuple[int, int]:
    """Classify every line of `source` into `sink`, in order, `batch_lines_for(source)` lines at a time;
    returns (classified, refused)."""
    batch = batch_lines_for(source)
    done = refused = 0
    pending: list[tuple[dict[str, Any], Mention]] = []

    def flush() -> None:
        nonlocal done
        classifications = engine.classify_many([m for _, m in pending])
        for (row, mention), c in zip(pending, classifications, strict=True):
            out = {**row, **labels_of(c)}
            if rules is not None:
                decision = rules.evaluate(mention, c)
                out["departments"] = [d.value for d in decision.departments]
                out["routing"] = [
                    {"department": a.department.value, "priority": a.priority.value, "rules": a.rules}
                    for a in decision.assignments
                ]
            sink.write(json.dumps(out, ensure_ascii=False) + "\n")
            done += 1
        pending.clear()

    for n, row in read_jsonl(source):
        if isinstance(row, BadLine):
            errors.write(f"{row}\n")
            refused += 1
            continue
        try:
            pending.append((row, to_mention(row, n)))
        except ValueError as exc:
            errors.write(f"line {n}: {exc}\n")
            refused += 1
            continue
        if len(pending) >= batch:
            flush()
            sink.flush()
    if pending:
        flush()
    return done, refused


@dataclass
class Evaluation:
    reports: list[FieldReport]
    n: int


def evaluate_rows(
    engine: Engine, rules: RuleSet, rows: Iterable[dict[str, Any]], *, topics: list[str] | None = None
) -> Evaluation:
    """Classify labelled rows and score every gold field they carry."""
    gold: dict[str, list[Any]] = {f: [] for f in GOLD_FIELDS}
    pred: dict[str, list[Any]] = {f: [] for f in GOLD_FIELDS}
    rows = list(rows)
    mentions = [to_mention(row, i) for i, row in enumerate(rows, start=1)]
    classifications = [
        c
        for start in range(0, len(mentions), BATCH_LINES)
        for c in engine.classify_many(mentions[start : start + BATCH_LINES])
    ]
    n = 0
    for row, mention, c in zip(rows, mentions, classifications, strict=True):
        n += 1
        predicted = {
            "sentiment": c.sentiment.value,
            "intent": c.intent.value,
            "topics": [t.name for t in c.topics],
        }
        if row.get("departments") is not None:
            predicted["departments"] = [d.value for d in rules.evaluate(mention, c).departments]
        for f in GOLD_FIELDS:
            value = row.get(f)
            if value is None or f not in predicted:
                continue
            gold[f].append(value if isinstance(value, str) else list(value))
            pred[f].append(predicted[f])
    label_sets: dict[str, list[str] | None] = {
        "sentiment": [s.value for s in Sentiment],
        "intent": [i.value for i in Intent],
        "departments": [d.value for d in Department],
        "topics": topics,
    }
    reports = [score_field(f, gold[f], pred[f], labels=label_sets[f]) for f in GOLD_FIELDS if gold[f]]
    return Evaluation(reports=reports, n=n)
