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
    """The rule engine, or the learned/cascade engine over the model artifact (a missing or unreadable
    artifact is a ConfigError that names the file)."""
    kind = kind or settings.classifier_engine
    if kind is ClassifierEngineKind.RULES:
        return RuleEngine(taxonomy)
    # numpy is imported only by the engines that need it.
    from shared.classify.learned import CascadeEngine, LearnedEngine, load_model

    learned = LearnedEngine(taxonomy, load_model(model_path or settings.classifier_model))
    if kind is ClassifierEngineKind.LEARNED:
        return learned
    return CascadeEngine(learned, threshold=settings.classifier_cascade_threshold)
