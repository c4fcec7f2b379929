"""The validation tenth that `mention-router train` chooses on is drawn by whole documents: a review's
sentences and a mention's rewordings fall on one side, so a choice is never made on text whose siblings
the heads (or the encoder) were fitted on."""

from __future__ import annotations

import random

import pytest

from shared.classify.corpus import Example, document_of, validation_rows


def _reviews(n: int) -> list[Example]:
    return [
        Example(text=f"sentence {k} of review {r}", source="semeval", id=f"semeval-laptops-{r}:{k}")
        for r in range(n)
        for k in range(4)
    ]


def test_a_reviews_sentences_are_all_validation_or_all_training() -> None:
    examples = _reviews(2000)
    is_val = validation_rows(examples)
    by_review: dict[str, set[bool]] = {}
    for ex, v in zip(examples, is_val, strict=True):
        by_review.setdefault(document_of(ex), set()).add(v)
    assert all(len(sides) == 1 for sides in by_review.values())
    share = sum(is_val) / len(is_val)
    assert 0.08 < share < 0.12  # a tenth of the documents
    assert validation_rows(examples) == is_val  # the same every run


def test_the_projects_reworded_mentions_fall_on_one_side() -> None:
    base = "the export to pdf drops every image after the latest update and support has not answered"

    def alone(id_: str) -> bool:
        return validation_rows([Example(text=f"unrelated {id_}", id=id_)])[0]

    # two ids that, each drawn by itself, fall on different sides
    ids = [f"tess-{n}" for n in range(200)]
    in_val = next(i for i in ids if alone(i))
    in_train = next(i for i in ids if not alone(i))
    rewordings = [Example(text=base, id=in_val), Example(text="sadly " + base + " yet", id=in_train)]
    others = [Example(text=f"{n} unrelated {n * 7} mention {n * 13}", id=f"other-{n}") for n in range(300)]
    is_val = validation_rows(rewordings + others)
    assert is_val[0] == is_val[1]  # drawn as one document
    assert 0 < sum(is_val[2:]) < 300  # the unrelated ones each by itself


def test_the_sentence_split_is_the_seeded_draw_the_committed_model_used() -> None:
    examples = _reviews(50)
    rng = random.Random(13)
    assert validation_rows(examples, "sentence", 13) == [rng.random() < 0.1 for _ in examples]
    with pytest.raises(ValueError, match="unknown validation split 'paragraph'"):
        validation_rows(examples, "paragraph")
