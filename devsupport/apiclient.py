"""The one way a test talks to an API in its own process: the app of `settings`, its lifespan run (keys,
bus, workers, as `python -m services.api` runs it), and an httpx client that reaches it without a socket."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from services.api.app import create_app
from shared.bus import Bus
from shared.settings import Settings


class ApiClient(httpx.AsyncClient):
    """A client of one in-process API; `app` is that API, for tests that reach into its state."""

    def __init__(self, app: FastAPI, **kwargs: Any) -> None:
        super().__init__(transport=httpx.ASGITransport(app=app), **kwargs)
        self.app = app


@asynccontextmanager
async def api_client(
    settings: Settings,
    *,
    engine: AsyncEngine | None = None,
    bus: Bus | None = None,
    headers: Mapping[str, str] | None = None,
    base_url: str = "http://api",
) -> AsyncIterator[ApiClient]:
    """The API of `settings`, running until the block ends. With `engine` or `bus` the test owns them
    (started, and disposed of by the test), as `create_app` says."""
    app = create_app(settings, engine=engine, bus=bus)
    async with app.router.lifespan_context(app), ApiClient(app, base_url=base_url, headers=headers) as client:
        yield client
