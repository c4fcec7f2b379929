"""Registering sources: from the API, and in bulk from a YAML file (`mention-router sources import`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import SourceRow
from shared.errors import ConfigError
from shared.events import utcnow
from shared.filters import FilterSyntaxError, KeywordFilter

SOURCE_KINDS = ("feed", "comments")
BACKFILL_POLICIES = ("all", "new")


@dataclass(frozen=True)
class SourceSpec:
    name: str
    url: str
    kind: str = "feed"
    influence: int = 1
    poll_interval_s: int = 300
    language: str | None = None
    enabled: bool = True
    filter_query: str | None = None
    backfill: str = "all"


async def add_source(session: AsyncSession, spec: SourceSpec) -> tuple[SourceRow, bool]:
    """The source with this URL, created if new. Returns (row, created). The caller commits."""
    existing = await session.scalar(select(SourceRow).where(SourceRow.url == spec.url))
    if existing is not None:
        return existing, False
    now = utcnow()
    row = SourceRow(
        id=uuid.uuid4().hex,
        name=spec.name,
        url=spec.url,
        kind=spec.kind,
        enabled=spec.enabled,
        poll_interval_s=spec.poll_interval_s,
        influence=spec.influence,
        language=spec.language,
        created_at=now,
        updated_at=now,
        consecutive_failures=0,
        items_seen=0,
        filter_query=spec.filter_query,
        backfill=spec.backfill,
    )
    session.add(row)
    await session.flush()
    return row, True


def load_sources_file(path: Path) -> list[SourceSpec]:
    """Sources from YAML (`sources: [{name, url, kind, influence, poll_interval_seconds, language}]`).
    A relative `url` is a file next to the YAML file (the bundled examples use that)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read sources file {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("sources"), list):
        raise ConfigError(f"{path}: expected a mapping with a `sources` list")
    specs = []
    for i, raw in enumerate(data["sources"]):
        specs.append(_spec(raw, base=path.parent, at=f"{path}: source #{i + 1}"))
    return specs


def _spec(raw: Any, *, base: Path, at: str) -> SourceSpec:
    if not isinstance(raw, dict) or not raw.get("url") or not raw.get("name"):
        raise ConfigError(f"{at}: needs at least `name` and `url`")
    url = str(raw["url"])
    if "://" not in url:
        url = (base / url).resolve().as_uri()
    kind = str(raw.get("kind", "feed"))
    if kind not in SOURCE_KINDS:
        raise ConfigError(f"{at}: kind {kind!r} is not one of {', '.join(SOURCE_KINDS)}")
    influence = raw.get("influence", 1)
    if not isinstance(influence, int) or not 1 <= influence <= 3:
        raise ConfigError(f"{at}: influence must be 1, 2 or 3")
    interval = raw.get("poll_interval_seconds", 300)
    if not isinstance(interval, int) or interval < 1:
        raise ConfigError(f"{at}: poll_interval_seconds must be a positive whole number")
    backfill = str(raw.get("backfill", "all"))
    if backfill not in BACKFILL_POLICIES:
        raise ConfigError(f"{at}: backfill {backfill!r} is not one of {', '.join(BACKFILL_POLICIES)}")
    query = raw.get("filter")
    if query is not None:
        check_filter(str(query), at=at)
    return SourceSpec(
        name=str(raw["name"]),
        url=url,
        kind=kind,
        influence=influence,
        poll_interval_s=interval,
        language=raw.get("language"),
        enabled=bool(raw.get("enabled", True)),
        filter_query=str(query) if query is not None else None,
        backfill=backfill,
    )


def check_filter(query: str, *, at: str = "filter") -> None:
    """Raise ConfigError when the keyword filter cannot be read (syntax: shared/filters.py)."""
    try:
        KeywordFilter.parse(query)
    except FilterSyntaxError as exc:
        raise ConfigError(f"{at}: {exc}") from exc
