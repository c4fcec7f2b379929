"""Named dependencies that keep route signatures short."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request, status
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.api.auth import get_principal
from shared.apikeys import Actor, Principal
from shared.bus import Bus
from shared.errors import is_transient
from shared.settings import Settings

log = logging.getLogger(__name__)


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's session: in autocommit for a GET (it only reads), else in one transaction that the
    route commits."""
    sessions: async_sessionmaker[AsyncSession] = (
        request.app.state.read_sessions if request.method == "GET" else request.app.state.sessions
    )
    session = sessions()
    try:
        yield session
    finally:
        try:
            await session.close()
        except Exception:
            # The database went away under the request (the rollback of close() finds the connection
            # gone): the answer is decided already (a 503 problem, most often) and must still reach the
            # client; a lost connection is the pool's to replace.
            log.warning("closing a database session failed", exc_info=True)


async def get_bus(request: Request) -> Bus:
    """The started bus; 503 when the broker cannot be reached (reads keep working without it)."""
    holder: BusHolder = request.app.state.bus
    try:
        return await holder.get()
    except Exception as exc:
        if not is_transient(exc):
            raise
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the message broker is unavailable") from exc


class BusHolder:
    """Starts the bus on first use, so that the API serves reads while the broker is away."""

    def __init__(self, bus: Bus, *, started: bool = False) -> None:
        self._bus = bus
        self._started = started
        self._lock = asyncio.Lock()

    async def get(self) -> Bus:
        if not self._started:
            async with self._lock:
                if not self._started:
                    await self._bus.start()
                    self._started = True
        return self._bus

    async def close(self) -> None:
        if self._started:
            self._started = False
            await self._bus.stop()


async def get_actor(
    principal: Annotated[Principal, Depends(get_principal)],
    x_actor: Annotated[
        str | None,
        Header(
            max_length=200,
            description="A display name for who makes the change, for a tool acting for its users; "
            "default: the API key's name. The activity and audit logs record it beside the key that "
            "authenticated the request (`actor_key`), which it cannot replace.",
        ),
    ] = None,
) -> Actor:
    return Actor.of(principal, x_actor)


SettingsDep = Annotated[Settings, Depends(get_settings)]
ActorDep = Annotated[Actor, Depends(get_actor)]
BusDep = Annotated[Bus, Depends(get_bus)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
