"""Composition root of the classifier."""

from __future__ import annotations

from services.classifier.service import ClassifierService
from shared.bus import Bus
from shared.classify import RuleEngine, Taxonomy
from shared.settings import Settings


def build(settings: Settings, *, bus: Bus) -> ClassifierService:
    engine = RuleEngine(Taxonomy.from_file(settings.taxonomy_file))
    return ClassifierService(settings=settings, bus=bus, engine=engine)
