"""The training data: every labelled source `mention-router train` reads, as `Example`s, and the held-out
parts it never trains on (see shared/classify/training.py for the sources and what is held out)."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import logging
import random
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.classify.batch import load_jsonl
from shared.classify.model import (
    DEPARTMENT_NAMES,
    INTENTS,
    SENTIMENTS,
)

if TYPE_CHECKING:
    from shared.classify.training import TrainingOptions

log = logging.getLogger(__name__)


HOLDOUT_SEMEVAL = 0.2
BANKING_SAMPLE = 1500
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


def _held_out(key: str, fraction: float) -> bool:
    h = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16)
    return h % 1000 < fraction * 1000


# The share of the training documents set aside to choose on (epochs, regularisation, thresholds, the
# cascade's policy), and the salt that keeps them apart from the held-out fifth drawn with the same hash.
VALIDATION_SHARE = 0.1
_VALIDATION_SALT = "validation:"
# Word-3-shingle Jaccard above which two of the project's mentions count as one text reworded (the same
# measure the test set's near-duplicate check uses).
NEAR_DUPLICATE = 0.5


def validation_rows(examples: list[Example], how: str = "document", seed: int = 13) -> list[bool]:
    """Which examples are the validation tenth. "document": whole documents, drawn by a hash of their
    key (`document_of`): a SemEval review's sentences together, and the project's mentions together with
    their near-duplicates. Drawn sentence by sentence, the rest of a review and a reworded mention stay
    in the training rows, where the word features learn the validation rows' product and writer.
    "sentence": each example by itself at random (the split minilm-v3, the model before minilm-v3.1,
    was trained with)."""
    if how == "sentence":
        rng = random.Random(seed)
        return [rng.random() < VALIDATION_SHARE for _ in examples]
    if how != "document":
        raise ValueError(f"unknown validation split {how!r}: document or sentence")
    keys = _document_keys(examples)
    return [_held_out(_VALIDATION_SALT + key, VALIDATION_SHARE) for key in keys]


def document_of(example: Example) -> str:
    """A SemEval review's sentences (`semeval-laptops-79:1`, `…-79:2`) are one document; any other example
    is its own (its id, or its text when it has none)."""
    return example.id.split(":", 1)[0] if example.id else example.text


def _document_keys(examples: list[Example]) -> list[str]:
    """Each example's document; the project's mentions and corrections that are near-duplicates of each
    other (word-3-shingle Jaccard above NEAR_DUPLICATE) share the key of the first of them. Only texts
    that share a shingle are compared."""
    keys = [document_of(ex) for ex in examples]
    own = [i for i, ex in enumerate(examples) if ex.source in ("project", "correction")]
    parent = {i: i for i in own}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    texts: dict[int, frozenset[tuple[str, ...]]] = {}
    having: dict[tuple[str, ...], list[int]] = {}  # shingle → the texts before that have it
    for i in own:
        mine = texts[i] = shingles(f"{examples[i].title} {examples[i].text}")
        for j in {j for s in mine for j in having.get(s, ())}:
            if jaccard(mine, texts[j]) > NEAR_DUPLICATE:
                a, b = root(i), root(j)
                parent[max(a, b)] = min(a, b)  # a group's root is its first text
        for s in mine:
            having.setdefault(s, []).append(i)
    for i in own:
        keys[i] = keys[root(i)]
    return keys


def shingles(text: str, n: int = 3) -> frozenset[tuple[str, ...]]:
    """The text's runs of n words (lowercased), the unit of the near-duplicate measure."""
    words = re.findall(r"\w+", text.lower())
    return frozenset(tuple(words[i : i + n]) for i in range(max(1, len(words) - n + 1)))


def jaccard(a: frozenset[tuple[str, ...]], b: frozenset[tuple[str, ...]]) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


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
