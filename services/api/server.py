"""uvicorn, run by whoever owns the process's signals (the API's own process or the embedded runner)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import uvicorn

from services.api.stream import close_streams


class QuietSignalsServer(uvicorn.Server):
    # The runner owns SIGINT/SIGTERM and stops every service, the API among them (uvicorn's own
    # handling would re-raise the signal after shutdown and end the process with -15).
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Open event streams (GET /v1/stream) never end by themselves, and uvicorn waits for open
        # responses: ask them to end (they notice after the listening sockets are closed).
        close_streams(self.config.app)
        await super().shutdown(sockets)
