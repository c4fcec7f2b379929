"""Composition root of the classifier."""

from __future__ import annotations

from services.classifier.service import ClassifierService
from shared.bus import Bus
from shared.classify.factory import build_engine
from shared.classify.reload import TaxonomyFile
from shared.settings import Settings


def build(settings: Settings, *, bus: Bus) -> ClassifierService:
    taxonomy = TaxonomyFile(settings.taxonomy_file)
    engine = build_engine(settings, taxonomy.taxonomy)
    return ClassifierService(settings=settings, bus=bus, engine=engine, taxonomy=taxonomy)
