"""The SQL of the sources."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import SourceRow


async def all_sources(session: AsyncSession, *, include_discovered: bool) -> Sequence[SourceRow]:
    """Every source in the order registered; with `include_discovered`, the per-post comment feeds too."""
    query = select(SourceRow).order_by(SourceRow.created_at, SourceRow.id)
    if not include_discovered:
        query = query.where(SourceRow.parent_id.is_(None))
    return (await session.scalars(query)).all()


async def delete_source(session: AsyncSession, source_id: str) -> None:
    """The source and the comment feeds discovered from it (their mentions stay)."""
    await session.execute(
        delete(SourceRow).where(or_(SourceRow.id == source_id, SourceRow.parent_id == source_id))
    )
