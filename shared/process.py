"""What every service process does around its own work: settings and logging, connecting to the bus
(retrying while it is only not there yet), the database when the stage has one, /metrics and health on
MR_METRICS_PORT, stopping on SIGTERM, and exit status 2 with a clear message on a configuration error.

Each service's composition root (`services/<name>/bootstrap.py`) hands these helpers the function that
builds its service; nothing here knows which services exist.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from shared.errors import ConfigError, is_transient
from shared.logs import setup_logging
from shared.settings import BusKind, Settings

log = logging.getLogger("mention_router")


class Stage(Protocol):
    async def run(self, stop: asyncio.Event) -> None: ...


# (bus, database engine or None) -> the stage
StageBuilder = Callable[[Any, Any], Stage]


def run_process(serve: Callable[[Settings], Coroutine[Any, Any, None]], *, uvloop: bool = False) -> None:
    """`python -m services.<name>`: settings from the environment, logging, then `serve` until stopped.
    `uvloop`: on uvloop's event loop (libuv, in C) instead of asyncio's: the API's socket work costs about
    a third less CPU per request there (docs/performance.md)."""
    settings = Settings()
    setup_logging(settings.log_level, json_lines=settings.log_json)
    loop_factory = None
    if uvloop:
        import uvloop as _uvloop

        loop_factory = _uvloop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(serve(settings))
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        sys.exit(2)
    except KeyboardInterrupt:
        pass


async def serve_stage(
    name: str,
    settings: Settings,
    build: StageBuilder,
    *,
    database: bool,
    started: asyncio.Event | None = None,
) -> None:
    """Run one pipeline stage against the configured bus (and database) until SIGTERM."""
    from shared.bus import build_bus
    from shared.signals import install_stop_signals

    stop = asyncio.Event()
    install_stop_signals(stop)
    bus = build_bus(settings)
    delay = 0.5
    while True:
        try:
            await bus.start()
            break
        except Exception as exc:
            if not is_transient(exc) or stop.is_set():
                raise
            log.warning("%s: bus not reachable (%s); retrying in %.1fs", name, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
    try:
        # With SASL: the ACLs this service needs, before it takes any record.
        await bus.verify_access(name)
    except BaseException:
        await bus.stop()
        raise
    if started is not None:
        started.set()
    engine = None
    if database:
        from shared.db import create_engine

        # A statement of a stage's batch that has not answered in a minute will not: fail it, and retry.
        engine = create_engine(
            settings.database_url, pool_size=settings.database_pool_size, command_timeout=60.0
        )
    try:
        await build(bus, engine).run(stop)
    finally:
        await bus.stop()
        if engine is not None:
            await engine.dispose()
    log.info("%s stopped", name)


async def check_kafka_access(settings: Settings, service: str) -> None:
    """For a process that serves without the broker (the API): refused credentials or a missing ACL
    stop it at start (ConfigError); a broker that cannot be reached yet only warns."""
    from shared.kafkaauth import authenticate, sasl_enabled

    if settings.bus is not BusKind.KAFKA or not sasl_enabled(settings):
        return
    from shared.kafkaacl import check_access

    try:
        await authenticate(settings)
        await check_access(settings, service)
    except Exception as exc:
        if not is_transient(exc):
            raise
        log.warning("%s: Kafka not reachable at start (%s); serving without it for now", service, exc)


async def serve_stage_observed(name: str, settings: Settings, build: StageBuilder, *, database: bool) -> None:
    """`serve_stage` with /metrics, /healthz and /readyz (ready once the bus is connected) on
    MR_METRICS_PORT."""
    from shared.metrics import MetricsServer, initialise

    initialise([name])
    started = asyncio.Event()
    if not settings.metrics_port:
        await serve_stage(name, settings, build, database=database, started=started)
        return
    server = MetricsServer(host=settings.metrics_host, port=settings.metrics_port, ready=started.is_set)
    try:
        await server.start()
    except OSError as exc:
        # In a container the port is the process's own; on a shared host (several stages started by
        # hand) the first one takes it and the others go on without, rather than refuse to start.
        log.warning(
            "%s: cannot serve metrics on %s:%d (%s); set MR_METRICS_PORT to another port, or 0",
            name,
            settings.metrics_host,
            settings.metrics_port,
            exc.strerror or exc,
        )
        await serve_stage(name, settings, build, database=database, started=started)
        return
    try:
        await serve_stage(name, settings, build, database=database, started=started)
    finally:
        await server.stop()
