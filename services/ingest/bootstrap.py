"""Composition root of ingest: everything `python -m services.ingest` runs."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.service import IngestService
from shared.bus import Bus
from shared.db import session_factory
from shared.process import run_process, serve_stage_observed
from shared.settings import Settings


def build(settings: Settings, *, bus: Bus, engine: AsyncEngine) -> IngestService:
    return IngestService(settings=settings, bus=bus, sessions=session_factory(engine))


async def serve(settings: Settings) -> None:
    """The ingest service, against the configured bus and database, until SIGTERM."""
    await serve_stage_observed(
        "ingest", settings, lambda bus, engine: build(settings, bus=bus, engine=engine), database=True
    )


def main() -> None:
    run_process(serve)
