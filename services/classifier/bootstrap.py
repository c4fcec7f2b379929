"""Composition root of the classifier: everything `python -m services.classifier` runs."""

from __future__ import annotations

from services.classifier.service import ClassifierService
from shared.bus import Bus
from shared.classify import Engine
from shared.classify.factory import build_engine
from shared.classify.reload import TaxonomyFile
from shared.process import run_process, serve_stage_observed
from shared.settings import Settings


def load_engine(settings: Settings) -> tuple[Engine, TaxonomyFile]:
    """The configured engine and the taxonomy file it reloads: a broken model or taxonomy is a
    ConfigError here, before the process connects to anything."""
    taxonomy = TaxonomyFile(settings.taxonomy_file)
    return build_engine(settings, taxonomy.taxonomy), taxonomy


def build(
    settings: Settings, *, bus: Bus, loaded: tuple[Engine, TaxonomyFile] | None = None
) -> ClassifierService:
    engine, taxonomy = loaded or load_engine(settings)
    return ClassifierService(settings=settings, bus=bus, engine=engine, taxonomy=taxonomy)


async def serve(settings: Settings) -> None:
    """The classifier service until SIGTERM. The model first: a missing or broken artifact stops the
    process at once, naming the file, instead of after the broker has answered. No database: the
    classifier never opens one (SQLAlchemy with asyncpg would cost it ~27 MB)."""
    loaded = load_engine(settings)
    await serve_stage_observed(
        "classifier", settings, lambda bus, _: build(settings, bus=bus, loaded=loaded), database=False
    )


def main() -> None:
    run_process(serve)
