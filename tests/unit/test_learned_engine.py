"""The learned engine: `mention-router train` makes a versioned artifact, the engine loads it, puts its
version in every classification, and refuses a missing or broken artifact with a clear error."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from services.cli import main
from shared.classify import Taxonomy
from shared.classify.corpus import semeval_department
from shared.classify.factory import build_engine
from shared.classify.heads import class_balance
from shared.classify.learned import CascadeEngine, CascadePolicy, LearnedEngine
from shared.classify.model import LinearModel, load_model
from shared.classify.training import TrainingOptions, train
from shared.errors import ConfigError
from shared.events import Classification, Mention
from shared.settings import REPO_ROOT, ClassifierEngineKind, Settings

TAXONOMY = REPO_ROOT / "config" / "taxonomy.yaml"
CASCADE = ClassifierEngineKind.CASCADE


def _mention(text: str, title: str = "") -> Mention:
    return Mention(
        id="m1", source_id="s1", title=title, text=text, published_at=datetime(2026, 1, 1, tzinfo=UTC)
    )


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained on the project's training set alone (no public data): a few seconds."""
    out = tmp_path_factory.mktemp("model") / "small.npz"
    train(
        TrainingOptions(
            public_data=tmp_path_factory.mktemp("no-public-data"),
            labelled=[REPO_ROOT / "data" / "labelled" / "train.jsonl"],
            taxonomy_file=TAXONOMY,
            version="test-1",
        ),
        out=out,
    )
    return out


def test_training_saves_a_versioned_artifact_with_how_it_was_trained(small_model: Path) -> None:
    model = load_model(small_model)
    assert model.version == "test-1"
    assert {"sentiment", "departments"} <= set(model.heads)
    assert model.meta["training"]["examples"]["labelled:train.jsonl"] > 300
    assert model.meta["command"] == "mention-router train"


def test_the_learned_engine_puts_the_model_version_in_every_classification(small_model: Path) -> None:
    engine = LearnedEngine(Taxonomy.from_file(TAXONOMY), load_model(small_model))
    c = engine.classify(_mention("The board crashes every time I export and support never answers."))
    assert c.engine == "learned"
    assert c.engine_version.startswith("test-1+rules-2+taxonomy-")
    assert c.sentiment_evidence[-1].startswith("model:test-1 p(neg)=")
    assert c.departments and all(d.evidence[0].startswith("model:test-1") for d in c.departments)
    assert 0 <= c.urgency <= 1
    Classification.model_validate_json(c.model_dump_json())


def test_the_learned_engine_handles_bad_input(small_model: Path) -> None:
    engine = LearnedEngine(Taxonomy.from_file(TAXONOMY), load_model(small_model))
    for text in ["", "x" * 1_000_000, "\x00\xff\xfe binary \ud800", "ボードが遅い。The board is slow."]:
        assert isinstance(engine.classify(_mention(text)), Classification)


def test_the_engine_is_chosen_by_configuration(small_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    taxonomy = Taxonomy.from_file(TAXONOMY)
    settings = Settings(classifier_engine=ClassifierEngineKind.LEARNED, classifier_model=small_model)
    assert isinstance(build_engine(settings, taxonomy), LearnedEngine)
    assert build_engine(Settings(classifier_engine=ClassifierEngineKind.RULES), taxonomy).name == "rules"
    # with no settings: the cascade over the committed model
    monkeypatch.delenv("MR_CLASSIFIER_ENGINE", raising=False)  # tests/conftest.py sets rules
    default = build_engine(Settings(), taxonomy)
    assert isinstance(default, CascadeEngine)
    assert default.learned.model.source == REPO_ROOT / "models" / "minilm-v3.npz"


def test_a_missing_or_broken_artifact_is_a_clear_configuration_error(tmp_path: Path) -> None:
    taxonomy = Taxonomy.from_file(TAXONOMY)
    missing = Settings(classifier_engine=ClassifierEngineKind.LEARNED, classifier_model=tmp_path / "none.npz")
    with pytest.raises(ConfigError, match=r"none.npz does not exist: train one with `mention-router train"):
        build_engine(missing, taxonomy)
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="cannot load model"):
        LinearModel.load(broken)


def test_the_committed_model_loads_and_classifies() -> None:
    path = Settings().classifier_model
    engine = LearnedEngine(Taxonomy.from_file(TAXONOMY), load_model(path))
    c = engine.classify(_mention("How do I reset my password? The login page keeps failing."))
    assert c.engine_version.startswith(load_model(path).version)
    assert "support" in {d.name.value for d in c.departments}


def test_train_command_and_evaluate_with_the_learned_engine(
    tmp_path: Path, small_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gold = tmp_path / "gold.jsonl"
    lines = (REPO_ROOT / "data" / "labelled" / "test.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines][:20]
    gold.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--engine", "learned", "--model", str(small_model), "--json", str(gold)])
    assert exit_info.value.code == 0
    report = json.loads(capsys.readouterr().out)[str(gold)]
    assert report["engine"].startswith("test-1")
    assert {f["field"] for f in report["fields"]} >= {"sentiment", "departments"}


def test_corrections_are_folded_in(tmp_path: Path) -> None:
    corrections = tmp_path / "corrections.jsonl"
    corrections.write_text(
        json.dumps({"id": "c1", "title": "", "text": "The frobnicator glows purple", "departments": ["pr"]})
        + "\n",
        encoding="utf-8",
    )
    out = tmp_path / "m.npz"
    model = train(
        TrainingOptions(
            public_data=tmp_path / "nothing",
            labelled=[REPO_ROOT / "data" / "labelled" / "train.jsonl"],
            corrections=[corrections],
            taxonomy_file=TAXONOMY,
            version="corr-1",
        ),
        out=out,
    )
    assert model.meta["training"]["examples"]["corrections"] == 1


@pytest.mark.parametrize(
    ("category", "restaurants", "department"),
    [
        ("SUPPORT#QUALITY", False, "support"),
        ("SHIPPING#GENERAL", False, "support"),
        ("SERVICE#GENERAL", True, "support"),
        ("COMPANY#GENERAL", False, "pr"),
        ("LAPTOP#PRICE", False, "marketing"),
        ("FOOD#PRICES", True, "marketing"),
        ("LAPTOP#GENERAL", False, "marketing"),
        ("BATTERY#OPERATION_PERFORMANCE", False, "rnd"),
        ("FOOD#QUALITY", True, "rnd"),
        ("LAPTOP#DESIGN_FEATURES", False, "product"),
        ("KEYBOARD#GENERAL", False, "product"),
    ],
)
def test_the_semeval_category_mapping(category: str, restaurants: bool, department: str) -> None:
    assert semeval_department(category, restaurants=restaurants) == department


def test_an_event_from_before_intent_and_urgency_still_parses() -> None:
    old = {
        "sentiment": "negative",
        "sentiment_score": -0.5,
        "sentiment_confidence": 0.7,
        "sentiment_evidence": ["vader:compound=-0.500"],
        "topics": [{"name": "bug", "confidence": 0.55, "evidence": ["term:crash"]}],
        "language": "en",
        "engine": "rules",
        "engine_version": "rules-1+taxonomy-1",
    }
    c = Classification.model_validate_json(json.dumps(old))
    assert (c.intent.value, c.urgency, c.departments) == ("information", 0.0, [])


def test_the_shipped_routing_rules_route_the_departments_a_model_suggests() -> None:
    from shared.events import Department, DepartmentLabel, Sentiment
    from shared.routing import RuleSet

    rules = RuleSet.from_file(
        REPO_ROOT / "config" / "routing.yaml", known_topics=Taxonomy.from_file(TAXONOMY).topics
    )
    c = Classification(
        sentiment=Sentiment.NEUTRAL,
        sentiment_score=0.0,
        sentiment_confidence=0.5,
        engine="learned",
        engine_version="x",
        departments=[DepartmentLabel(name=Department.PRODUCT, confidence=0.8)],
    )
    decision = rules.evaluate(_mention("The hinge feels flimsy"), c)
    assert [d.value for d in decision.departments] == ["product"]
    assert decision.assignments[0].rules == ["learned-suggests-product"]
    # Without suggestions (the rule engine) those rules never match: the fallback applies.
    plain = rules.evaluate(_mention("The hinge feels flimsy"), c.model_copy(update={"departments": []}))
    assert plain.matched_rules == ("fallback",)


@pytest.fixture(scope="module")
def committed() -> LinearModel:
    """The default model (models/minilm-v3.npz): fast and accurate heads and the int8 encoder."""
    return load_model(Settings().classifier_model)


def test_the_committed_model_runs_its_encoder_as_training_did(committed: LinearModel) -> None:
    """The artifact carries, for a few texts, the vectors torch computed with the tuned float32 encoder
    and those ONNX Runtime computed with the int8 graph at training time: the runtime reproduces the
    latter exactly (run as they were: one batch of the check texts for the committed model) and the
    service's encoder (one text at a time) stays close to the former (int8 costs a little)."""
    from shared.classify.encoder import OnnxEncoder

    check = committed.meta["encoder"]["check"]
    graph, tokenizer = committed.encoder_files()
    as_recorded = OnnxEncoder(
        graph, tokenizer, batch_size=check.get("onnx_int8_batch_size", len(check["texts"]))
    )
    int8 = np.asarray(check["onnx_int8"], dtype=np.float32)
    assert np.abs(as_recorded.encode(check["texts"]) - int8).max() < 1e-4
    torch_float = np.asarray(check["torch_float32"], dtype=np.float32)
    cosines = (committed.encoder().encode(check["texts"]) * torch_float).sum(axis=1)
    assert cosines.min() > 0.99, cosines
    # and the vectors mean something: a stance moves them
    v = committed.encoder().encode(["Support never answered my ticket", "Support answered within minutes"])
    assert float(v[0] @ v[1]) < 0.95


def test_the_encoder_batches_by_length_and_keeps_the_head_and_tail(committed: LinearModel) -> None:
    encoder = committed.encoder()
    texts = ["short", "a much longer text about the export that crashes on every board " * 3, ""]
    together = encoder.encode(texts)
    alone = np.vstack([encoder.encode([t]) for t in texts])
    # The service's encoder runs one text at a time: a text's vector never depends on its neighbours.
    assert np.array_equal(together, alone)
    # In batches (training) the padding is masked out; what a batch changes is int8's activation scale,
    # computed per run (dynamic quantisation): a percent or two of cosine, no more.
    from shared.classify.encoder import OnnxEncoder

    graph, tokenizer = committed.encoder_files()
    batched = OnnxEncoder(graph, tokenizer, batch_size=16).encode(texts)
    assert (batched * alone).sum(axis=1).min() > 0.97
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-4)
    long = "start " + "filler " * 2000 + "the ending matters"
    ids = encoder.ids(long)
    assert len(ids) == encoder.max_tokens
    tail = encoder.ids("the ending matters")[1:-1]
    assert ids[-1 - len(tail) : -1] == tail
    assert ids[1] == encoder.ids("start")[1]


def test_the_encoder_threads_give_every_text_the_vector_it_gets_alone(committed: LinearModel) -> None:
    """MR_CLASSIFIER_THREADS texts run at once, each on one thread: the vectors are those of one
    thread, bit for bit, whether encoded in one call or handed to the threads with `submit`."""
    from shared.classify.encoder import OnnxEncoder

    graph, tokenizer = committed.encoder_files()
    texts = [
        f"Release {i}: the export {'crashes' if i % 2 else 'works'} on boards " * (1 + i % 5)
        for i in range(12)
    ]
    one = OnnxEncoder(graph, tokenizer, threads=1)
    three = OnnxEncoder(graph, tokenizer, threads=3)
    alone = one.encode(texts)
    assert np.array_equal(three.encode(texts), alone)
    assert np.array_equal(three.submit(texts[:5]).result(), alone[:5])
    assert np.array_equal(one.submit(texts[5:]).result(), alone[5:])


def test_the_cascade_labels_a_batch_as_it_labels_each_mention_alone(committed: LinearModel) -> None:
    """The cascade reads a batch in chunks while the encoder works on the chunks before: the labels of
    a batch longer than several chunks, with settled and escalated mentions mixed, are each mention's
    own."""
    taxonomy = Taxonomy.from_file(TAXONOMY)
    cascade = CascadeEngine(LearnedEngine(taxonomy, committed))
    texts = [
        "The export crashes every single time, awful and broken!!",
        "We moved the planning session to Thursday.",
        "Love the new templates, they saved our workshop.",
        "How do I reset my password? The link in the mail has expired.",
        "Your pricing page says one thing and the invoice another.",
        "Would be great to have a dark mode for the board view.",
    ]
    mentions = [
        _mention(f"{t} ({i})") for i in range(3 * CascadeEngine.CHUNK // 2) for t in texts[i % 6 :][:1]
    ]
    together = cascade.classify_many(mentions)
    assert 0 < cascade.escalated < len(mentions)
    alone = [cascade.classify(m) for m in mentions]
    assert [c.model_dump() for c in together] == [c.model_dump() for c in alone]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "x" * 1_000_000,
        "Battery ok. " * 90_000,
        "\x00\xff\xfe binary \ud800 \x01\x02" * 50,
        "🔥🔥🔥😡😡💯",
        "ボードが遅い。The board is slow. Доска тормозит.",
        "Η εφαρμογή κολλάει κάθε φορά που ανοίγω έναν πίνακα.",  # noqa: RUF001 - Greek on purpose
    ],
    ids=["empty", "1MB", "1MB-words", "binary", "emoji", "mixed-scripts", "greek"],
)
def test_bad_input_gets_a_bounded_low_confidence_label(committed: LinearModel, text: str) -> None:
    engine = CascadeEngine(LearnedEngine(Taxonomy.from_file(TAXONOMY), committed))
    engine.policy = CascadePolicy(sentiment_min=1.01)  # every mention through the encoder
    c = engine.classify(_mention(text))
    Classification.model_validate_json(c.model_dump_json())
    if text.startswith("ボード"):
        assert c.sentiment.value == "negative"  # it reads the English sentence among the others
    elif text not in {"x" * 1_000_000, "Battery ok. " * 90_000}:
        assert c.sentiment_confidence <= 0.5, (c.sentiment_confidence, c.sentiment_evidence)
    assert len(engine.learned.model.encoder().ids(text)) <= engine.learned.model.encoder().max_tokens


def test_the_cascade_answers_from_the_fast_heads_when_they_are_sure(committed: LinearModel) -> None:
    taxonomy = Taxonomy.from_file(TAXONOMY)
    cascade = CascadeEngine(LearnedEngine(taxonomy, committed))
    assert cascade.policy.sentiment_min == committed.meta["cascade"]["sentiment_min"]
    texts = [
        "The export crashes every single time, awful and broken!!",
        "We moved the planning session to Thursday.",
        "Love the new templates, they saved our workshop.",
    ]
    cascade.policy = CascadePolicy(sentiment_min=0.0, department_margin=0.0)
    fast = cascade.classify_many([_mention(t) for t in texts])
    settled = [c for c in fast if "/fast" in c.sentiment_evidence[-1]]
    assert cascade.escalated == len(texts) - len(settled)
    assert all(c.engine == "cascade" and c.engine_version.startswith("cascade(minilm") for c in fast)
    cascade.policy = CascadePolicy(sentiment_min=1.01)
    accurate = cascade.classify_many([_mention(t) for t in texts])
    assert cascade.escalated == len(texts) - len(settled) + len(texts)
    assert all("/fast" not in c.sentiment_evidence[-1] for c in accurate)
    # the cascade's accurate answers are the learned engine's
    learned = LearnedEngine(taxonomy, committed).classify_many([_mention(t) for t in texts])
    assert [c.sentiment for c in accurate] == [c.sentiment for c in learned]
    assert [c.departments for c in accurate] == [c.departments for c in learned]


def test_learned_labels_carry_the_words_behind_them(committed: LinearModel) -> None:
    text = "The battery dies in two hours and the fan is terribly loud."
    c = LearnedEngine(Taxonomy.from_file(TAXONOMY), committed).classify(_mention(text))
    assert c.sentiment.value == "negative"
    words = [e.removeprefix("word:") for e in c.sentiment_evidence if e.startswith("word:")]
    assert words, c.sentiment_evidence
    assert all(w.removeprefix("not ").split()[-1] in text.lower() for w in words), words


def test_a_title_that_only_names_the_post_and_author_is_not_read_as_sentiment() -> None:
    from shared.classify.engine import mention_text

    m = _mention("The export works now.", title="Comment on Release notes 4.2 by Grace Whitlock")
    assert mention_text(m) == "The export works now."
    kept = _mention("The export works now.", title="Great release")
    assert mention_text(kept).startswith("Great release. ")


def test_the_cascade_refuses_a_model_without_a_fast_stage(small_model: Path) -> None:
    with pytest.raises(ConfigError, match="no fast stage"):
        CascadeEngine(LearnedEngine(Taxonomy.from_file(TAXONOMY), load_model(small_model)))


def test_a_truncated_or_incompatible_artifact_is_refused_naming_the_file_and_the_fix(
    tmp_path: Path, committed: LinearModel
) -> None:
    import json as json_

    source = Settings().classifier_model
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    taxonomy = Taxonomy.from_file(TAXONOMY)
    with pytest.raises(ConfigError, match=r"truncated.npz.*make train"):
        build_engine(Settings(classifier_engine=CASCADE, classifier_model=truncated), taxonomy)
    old = tmp_path / "old.npz"
    with np.load(source, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json_.loads(str(arrays["meta"]))
    arrays["meta"] = np.asarray(json_.dumps({**meta, "format": 1}))
    np.savez(old, **arrays)
    with pytest.raises(ConfigError, match=r"old.npz: artifact format 1, this version reads format 2"):
        build_engine(Settings(classifier_engine=CASCADE, classifier_model=old), taxonomy)
    no_encoder = tmp_path / "no-encoder.npz"
    np.savez(
        no_encoder,
        **{k: v for k, v in arrays.items() if not k.startswith("encoder.")}
        | {"meta": np.asarray(json_.dumps(meta))},
    )
    with pytest.raises(
        ConfigError, match=r"no-encoder.npz: the encoder \(no-encoder.onnx and the tokenizer\) is missing"
    ):
        build_engine(Settings(classifier_engine=CASCADE, classifier_model=no_encoder), taxonomy)
    # the graph beside the artifact, swapped for another: refused by its SHA-256
    swapped = tmp_path / "swapped.npz"
    swapped.write_bytes(source.read_bytes())
    graph = source.with_suffix(".onnx").read_bytes()
    swapped.with_suffix(".onnx").write_bytes(graph[:-10] + bytes(10))
    with pytest.raises(ConfigError, match=r"swapped.onnx is not the one the model was trained with"):
        build_engine(Settings(classifier_engine=CASCADE, classifier_model=swapped), taxonomy)


def test_finetune_without_torch_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from shared.classify.finetune import require_torch

    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    with pytest.raises(SystemExit, match="make train"):
        require_torch()


def test_sentiment_classes_are_balanced_per_corpus() -> None:
    # Tweets: mostly neutral; reviews: hardly any neutral. Balanced per corpus, each corpus's classes
    # weigh the same in total, so neither corpus's class frequencies become the model's prior.
    y = ["neutral"] * 6 + ["positive"] * 2 + ["positive"] * 3 + ["neutral"]
    groups = ["tweets"] * 8 + ["reviews"] * 4
    w = class_balance(y, groups)
    for corpus in ("tweets", "reviews"):
        totals: dict[str, float] = {}
        for label, g, weight in zip(y, groups, w, strict=True):
            if g == corpus:
                totals[label] = totals.get(label, 0.0) + weight
        assert totals["neutral"] == pytest.approx(totals["positive"])
    assert w[0] == pytest.approx(8 / (2 * 6)) and w[-1] == pytest.approx(4 / (2 * 1))
    # without groups: one balance over all examples
    assert class_balance(y) == pytest.approx(
        [12 / (2 * 7) if label == "neutral" else 12 / (2 * 5) for label in y]
    )


def test_the_classifier_service_refuses_to_start_on_a_broken_model(tmp_path: Path) -> None:
    """As an operator sees it: the process exits 2 at once, the log names the file and the fix, and no
    other engine takes over."""
    import os
    import subprocess
    import sys

    source = Settings().classifier_model
    broken = tmp_path / "broken.npz"
    broken.write_bytes(source.read_bytes()[:1000])
    env = {
        **os.environ,
        "MR_CLASSIFIER_ENGINE": "cascade",
        "MR_CLASSIFIER_MODEL": str(broken),
        "MR_METRICS_PORT": "0",
        "MR_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",  # never reached: the model is loaded first
    }
    done = subprocess.run(
        [sys.executable, "-m", "services.classifier"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert f"cannot load model {broken}" in done.stderr and "make train" in done.stderr


def test_distilled_examples_carry_the_accurate_heads_answers() -> None:
    from shared.classify.corpus import Example
    from shared.classify.heads import distil_examples
    from shared.classify.model import DEPARTMENT_NAMES, SENTIMENTS, Head

    X = np.asarray([[1.0, 0.0], [0.0, 1.0]], np.float32)
    sentiment = Head(
        "sentiment", SENTIMENTS, False, np.asarray([[5, 0, 0], [0, 0, 5]], np.float32), np.zeros(3)
    )
    weights = np.zeros((2, 5), np.float32)
    weights[1, DEPARTMENT_NAMES.index("rnd")] = 9
    departments = Head(
        "departments",
        DEPARTMENT_NAMES,
        True,
        weights,
        np.full(5, -3.0, np.float32),
        np.full(5, 0.5, np.float32),
    )
    examples = [
        Example(text="a tweet", source="tweets", sentiment="neutral"),  # no departments labelled
        Example(text="a review", source="semeval", departments=["product"], intent="complaint"),
    ]
    out = distil_examples(X, {"sentiment": sentiment, "departments": departments}, examples)
    assert [e.sentiment for e in out] == ["negative", "positive"]
    assert [e.departments for e in out] == [[], ["rnd"]]
    assert [e.intent for e in out] == [None, "complaint"]  # intent stays as labelled
    assert [e.source for e in out] == ["tweets", "semeval"]


def test_equal_corpus_weighting_gives_every_corpus_the_same_total() -> None:
    from shared.classify.heads import _equal_corpora

    groups = ["tweets"] * 90 + ["laptops"] * 8 + ["project"] * 2
    w = _equal_corpora(groups)
    totals = {g: sum(x for x, h in zip(w, groups, strict=True) if h == g) for g in set(groups)}
    assert totals == pytest.approx(dict.fromkeys(totals, 100 / 3))


_SQRT = 9 + 4 + 3**0.5  # the roots of 81, 16 and 3


@pytest.mark.parametrize(
    ("weighting", "expected"),
    [
        ("size", {"tweets": 81, "laptops": 16, "project": 3}),
        ("sqrt", {"tweets": 900 / _SQRT, "laptops": 400 / _SQRT, "project": 100 * 3**0.5 / _SQRT}),
    ],
)
def test_fine_tuning_weighs_corpora_by_size_or_by_its_square_root(
    weighting: str, expected: dict[str, float]
) -> None:
    from shared.classify.heads import corpus_factors

    groups = ["tweets"] * 81 + ["laptops"] * 16 + ["project"] * 3
    w = corpus_factors(groups, weighting)
    totals = {g: sum(x for x, h in zip(w, groups, strict=True) if h == g) for g in set(groups)}
    assert totals == pytest.approx(expected)
    assert w.mean() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown corpus weighting"):
        corpus_factors(groups, "log")


def test_fine_tuning_scores_epochs_by_the_evaluation_modules_macro_f1() -> None:
    from shared.classify.finetune import _macro_f1

    assert _macro_f1([0, 1, 2, 1], [0, 1, 1, 1]) == pytest.approx((1 + 0.8 + 0) / 3)
    assert _macro_f1([[1, 0, 0], [0, 1, 1]], [[1, 0, 0], [0, 1, 0]]) == pytest.approx(2 / 3)
    assert _macro_f1([], []) == 0.0
