"""Composition root of the router: everything `python -m services.router` runs."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from services.router.service import RouterService
from shared.bus import Bus
from shared.classify import Taxonomy
from shared.db import session_factory
from shared.process import run_process, serve_stage_observed
from shared.settings import Settings


def build(settings: Settings, *, bus: Bus, engine: AsyncEngine) -> RouterService:
    """The router; it loads the active rule set from the database when it runs (seeding the database from
    `settings.routing_file` the first time), validating rule sets against the taxonomy's topics."""
    topics = Taxonomy.from_file(settings.taxonomy_file).topics
    return RouterService(settings=settings, bus=bus, sessions=session_factory(engine), known_topics=topics)


async def serve(settings: Settings) -> None:
    """The router service, against the configured bus and database, until SIGTERM."""
    await serve_stage_observed(
        "router", settings, lambda bus, engine: build(settings, bus=bus, engine=engine), database=True
    )


def main() -> None:
    run_process(serve)
