"""Composition root of the router."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from services.router.service import RouterService
from shared.bus import Bus
from shared.classify import Taxonomy
from shared.db import session_factory
from shared.routing import RuleSet
from shared.settings import Settings


def build(settings: Settings, *, bus: Bus, engine: AsyncEngine) -> RouterService:
    topics = Taxonomy.from_file(settings.taxonomy_file).topics
    rules = RuleSet.from_file(settings.routing_file, known_topics=topics)
    return RouterService(settings=settings, bus=bus, sessions=session_factory(engine), rules=rules)
