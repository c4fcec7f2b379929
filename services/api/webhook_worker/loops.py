"""What the fan-out and the sender loops both do: wait for the first of several things, and log a failed
round before the pause after it."""

from __future__ import annotations

import asyncio
import logging

from shared.errors import is_transient

log = logging.getLogger(__name__)


def backoff(failures: int) -> float:
    """The pause after `failures` failed rounds in a row: 1 s, 2 s, 4 s, ... up to 30 s."""
    return min(30.0, 0.5 * 2.0**failures)


async def wait(
    stop: asyncio.Event,
    wake: asyncio.Event | None,
    seconds: float,
    *,
    also: set[asyncio.Task[None]] | tuple[()] = (),
) -> None:
    """Until `stop`, `wake`, one of `also` finishing, or `seconds`, whichever comes first."""
    waiters = [asyncio.ensure_future(stop.wait())]
    if wake is not None:
        waiters.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait([*waiters, *also], timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


def log_failure(what: str, exc: BaseException, delay: float) -> None:
    if is_transient(exc):
        log.warning("%s: %s (%s); trying again in %.1fs", what, type(exc).__name__, exc, delay)
    else:
        log.error("%s failed; trying again in %.1fs", what, delay, exc_info=exc)
