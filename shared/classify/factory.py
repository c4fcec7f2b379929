"""Builds the engine the configuration names (MR_CLASSIFIER_ENGINE, MR_CLASSIFIER_MODEL)."""

from __future__ import annotations

from pathlib import Path

from shared.classify.engine import Engine, RuleEngine
from shared.classify.taxonomy import Taxonomy
from shared.settings import ClassifierEngineKind, Settings


def build_engine(
    settings: Settings,
    taxonomy: Taxonomy,
    *,
    kind: ClassifierEngineKind | None = None,
    model_path: Path | None = None,
) -> Engine:
    """The rule engine, or the learned/cascade engine over the model artifact (a missing, truncated or
    incompatible artifact is a ConfigError that names the file and the fix; never another engine)."""
    kind = kind or settings.classifier_engine
    if kind is ClassifierEngineKind.RULES:
        return RuleEngine(taxonomy)
    # numpy is imported only by the engines that need it.
    from shared.classify.learned import CascadeEngine, LearnedEngine
    from shared.classify.model import EncoderOptions, load_model

    options = EncoderOptions(threads=settings.classifier_threads, max_tokens=settings.classifier_max_tokens)
    model = load_model(model_path or settings.classifier_model, encoder_options=options)
    learned = LearnedEngine(taxonomy, model)
    if model.embedder:
        model.encoder()  # built now: a broken encoder stops the start, not the first batch
    if kind is ClassifierEngineKind.LEARNED:
        return learned
    return CascadeEngine(learned)
