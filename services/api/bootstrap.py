"""Composition root of the API: everything `python -m services.api` runs."""

from __future__ import annotations

import asyncio
import logging

import uvicorn

from services.api.app import create_app
from services.api.server import QuietSignalsServer
from shared.process import check_kafka_access, run_process
from shared.settings import Settings
from shared.signals import install_stop_signals


async def serve(settings: Settings) -> None:
    """The REST API on MR_API_HOST:MR_API_PORT until SIGTERM."""
    await check_kafka_access(settings, "api")
    server = QuietSignalsServer(
        uvicorn.Config(
            create_app(settings),
            host=settings.api_host,
            port=settings.api_port,
            # uvicorn's lines (start-up, access log) go to the handler every service sets up, in its format
            # (MR_LOG_JSON) and at its level (MR_LOG_LEVEL), not through uvicorn's own plain handlers.
            log_config=None,
            log_level=logging.getLogger().getEffectiveLevel(),
        )
    )
    stop = asyncio.Event()
    install_stop_signals(stop)
    serving = asyncio.create_task(server.serve())
    await asyncio.wait([serving, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    await serving


def main() -> None:
    run_process(serve, uvloop=True)
