"""The outbox: events written in the transaction of the change they announce, published after it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.bus import Bus, OutMessage
from shared.db import OutboxRow


def add_to_outbox(session: AsyncSession, messages: Sequence[OutMessage], *, now: datetime) -> None:
    session.add_all(
        OutboxRow(topic=m.topic, key=m.key, value=m.value, headers=dict(m.headers), created_at=now)
        for m in messages
    )


async def relay_outbox(sessions: async_sessionmaker[AsyncSession], bus: Bus, *, limit: int = 500) -> int:
    """Publish what the outbox holds, oldest first, and delete it once the broker acknowledged it.
    At-least-once: a crash after the publish and before the delete publishes again (same ce_id)."""
    async with sessions() as session, session.begin():
        rows = list(
            await session.scalars(
                select(OutboxRow).order_by(OutboxRow.id).limit(limit).with_for_update(skip_locked=True)
            )
        )
        if not rows:
            return 0
        await bus.send(
            [OutMessage(topic=r.topic, key=r.key or "", value=r.value, headers=dict(r.headers)) for r in rows]
        )
        await session.execute(delete(OutboxRow).where(OutboxRow.id.in_([r.id for r in rows])))
    return len(rows)
