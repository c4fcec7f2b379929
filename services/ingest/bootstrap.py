"""Composition root of ingest."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.service import IngestService
from shared.bus import Bus
from shared.db import session_factory
from shared.settings import Settings


def build(settings: Settings, *, bus: Bus, engine: AsyncEngine) -> IngestService:
    return IngestService(settings=settings, bus=bus, sessions=session_factory(engine))
