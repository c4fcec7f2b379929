"""The project's labelled set (data/labelled/): shape, coverage, and train and test kept apart."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from shared.classify import Taxonomy
from shared.classify.corpus import jaccard, shingles
from shared.classify.language import detect_language
from shared.settings import DEPARTMENTS, REPO_ROOT

FOLDER = REPO_ROOT / "data" / "labelled"


def _load(name: str) -> list[dict[str, Any]]:
    with (FOLDER / name).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def train() -> list[dict[str, Any]]:
    return _load("train.jsonl")


@pytest.fixture(scope="module")
def test() -> list[dict[str, Any]]:
    return _load("test.jsonl")


def _key(row: dict[str, Any]) -> str:
    return " ".join(f"{row['title']} {row['text']}".lower().split())


def test_train_and_test_never_share_an_example(
    train: list[dict[str, Any]], test: list[dict[str, Any]]
) -> None:
    assert not {r["id"] for r in train} & {r["id"] for r in test}
    assert not {_key(r) for r in train} & {_key(r) for r in test}
    assert not {" ".join(r["text"].lower().split()) for r in train} & {
        " ".join(r["text"].lower().split()) for r in test
    }
    for rows in (train, test):
        assert len({r["id"] for r in rows}) == len(rows)


def test_every_row_has_the_fields_and_valid_labels(
    train: list[dict[str, Any]], test: list[dict[str, Any]]
) -> None:
    topics = set(Taxonomy.from_file(REPO_ROOT / "config" / "taxonomy.yaml").topics)
    for row in train + test:
        assert set(row) == {"id", "title", "text", "sentiment", "topics", "departments", "intent"}
        assert row["text"].strip()
        assert row["sentiment"] in {"positive", "neutral", "negative"}
        assert row["intent"] in {"question", "complaint", "praise", "suggestion", "information"}
        assert set(row["topics"]) <= topics
        assert row["departments"] and set(row["departments"]) <= set(DEPARTMENTS)


# The test set is frozen: written before the v3 models were trained, never edited since, never used to
# choose anything. A change to it must be deliberate (and retires every figure measured on it).
TEST_SET_SHA256 = "fe0e5d68d6e9f59cef5f70d577e231ed0b75127dbcedf67201732b922c2ebc9e"


def test_the_test_set_is_frozen() -> None:
    import hashlib

    assert hashlib.sha256((FOLDER / "test.jsonl").read_bytes()).hexdigest() == TEST_SET_SHA256


def _shingles(row: dict[str, Any]) -> frozenset[tuple[str, ...]]:
    return shingles(f"{row['title']} {row['text']}")


def test_no_training_mention_is_a_near_duplicate_of_a_test_mention(
    train: list[dict[str, Any]], test: list[dict[str, Any]]
) -> None:
    """Word-3-shingle Jaccard above 0.5 is a paraphrase close enough to carry the answer over."""
    train_shingles = [_shingles(r) for r in train]
    close = []
    for row in test:
        mine = _shingles(row)
        for other, theirs in zip(train, train_shingles, strict=True):
            if jaccard(mine, theirs) > 0.5:  # the measure, whatever training uses
                close.append((row["id"], other["id"]))
    assert not close


def test_it_is_big_enough_and_covers_every_topic_department_and_label(
    train: list[dict[str, Any]], test: list[dict[str, Any]]
) -> None:
    assert len(test) >= 300
    rows = train + test
    assert len(rows) >= 1000
    topics = set(Taxonomy.from_file(REPO_ROOT / "config" / "taxonomy.yaml").topics)
    for part in (train, test):
        assert set().union(*(r["topics"] for r in part)) == topics
        assert set().union(*(r["departments"] for r in part)) == set(DEPARTMENTS)
        assert {r["sentiment"] for r in part} == {"positive", "neutral", "negative"}
        assert len({r["intent"] for r in part}) == 5


def test_it_has_non_english_text(train: list[dict[str, Any]], test: list[dict[str, Any]]) -> None:
    languages = Counter(detect_language(f"{r['title']}. {r['text']}") for r in train + test)
    assert sum(n for lang, n in languages.items() if lang not in {"en", "und"}) >= 25
    assert {"de", "fr", "es"} <= set(languages)
