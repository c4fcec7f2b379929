"""The embedded default: the four services in one process on the in-memory bus and SQLite."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import uvicorn
from sqlalchemy import delete, exists, update
from sqlalchemy.ext.asyncio import AsyncEngine

from services.api.app import create_app
from services.api.server import QuietSignalsServer
from services.classifier import bootstrap as classifier_bootstrap
from services.ingest import bootstrap as ingest_bootstrap
from services.router import bootstrap as router_bootstrap
from shared.apikeys import authenticate, create_key
from shared.bus import MemoryBroker, MemoryBus
from shared.db import MentionRow, SeenEntryRow, SourceRow, create_engine, migrate, session_factory
from shared.settings import REPO_ROOT, BusKind, Settings
from shared.sources import add_source, load_sources_file

log = logging.getLogger(__name__)

EXAMPLE_SOURCES = REPO_ROOT / "examples" / "sources.yaml"


def embedded_settings(**overrides: object) -> Settings:
    base = Settings()
    values: dict[str, object] = {"bus": BusKind.MEMORY, "ingest_allow_file_urls": True}
    values.update(overrides)
    return base.model_copy(update=values)


async def import_sources(settings: Settings, path: Path) -> tuple[int, int]:
    """Register the sources listed in `path`; returns (created, already there)."""
    engine = create_engine(settings.database_url)
    created = existing = 0
    try:
        async with session_factory(engine)() as session:
            for spec in load_sources_file(path):
                _, new = await add_source(session, spec)
                created += new
                existing += not new
            await session.commit()
    finally:
        await engine.dispose()
    return created, existing


async def local_admin_key(settings: Settings) -> str:
    """The embedded instance's admin key, kept in `settings.embedded_key_file` (mode 0600): made on the
    first run, reused while it still works (a revoked one is replaced)."""
    path = settings.embedded_key_file
    engine = create_engine(settings.database_url)
    try:
        async with session_factory(engine)() as session:
            if path.exists():
                key = path.read_text(encoding="utf-8").strip()
                if await authenticate(session, key) is not None:
                    log.info("API key (admin) of this instance: in %s", path)
                    return key
            made = await create_key(
                session, name="local-admin", scopes=["admin"], created_by="mention-router run"
            )
            await session.commit()
    finally:
        await engine.dispose()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(made.key + "\n", encoding="utf-8")
    log.info(
        "made an admin API key for this instance: in %s (send it as `Authorization: Bearer <key>`)", path
    )
    return made.key


async def run_embedded(
    settings: Settings,
    *,
    stop: asyncio.Event,
    sources_file: Path | None = EXAMPLE_SOURCES,
    serve_api: bool = True,
    broker: MemoryBroker | None = None,
    drain_timeout_s: float = 10.0,
) -> None:
    """Migrate, register the example sources, run ingest, classifier, router and the API until `stop`."""
    await migrate(settings.database_url)
    if sources_file is not None:
        created, existing = await import_sources(settings, sources_file)
        log.info("sources from %s: %d registered, %d already there", sources_file, created, existing)
    key = await local_admin_key(settings) if serve_api and settings.api_auth else None
    broker = broker or MemoryBroker(partitions=settings.topic_partitions)
    bus = MemoryBus(broker)
    engine = create_engine(settings.database_url)
    forgotten = await forget_unrouted(engine)
    if forgotten:
        log.info("%d entries were in flight when the last run ended; they will be fetched again", forgotten)
    ingest = ingest_bootstrap.build(settings, bus=bus, engine=engine)
    classifier = classifier_bootstrap.build(settings, bus=bus)
    router = router_bootstrap.build(settings, bus=bus, engine=engine)
    # Ingest stops first; the classifier and router then drain what is in the in-memory bus, which does
    # not outlive the process.
    stop_pipeline = asyncio.Event()
    ingest_task = asyncio.create_task(ingest.run(stop), name="ingest")
    pipeline = [
        asyncio.create_task(classifier.run(stop_pipeline), name="classifier"),
        asyncio.create_task(router.run(stop_pipeline), name="router"),
    ]
    tasks = [ingest_task, *pipeline]
    server: QuietSignalsServer | None = None
    announcer: asyncio.Task[None] | None = None
    if serve_api:
        app = create_app(settings, engine=engine, bus=bus)
        server = QuietSignalsServer(
            uvicorn.Config(
                app, host=settings.api_host, port=settings.api_port, log_level="warning", lifespan="on"
            )
        )
        tasks.append(asyncio.create_task(server.serve(), name="api"))
        log.info("API on http://%s:%d (docs at /docs)", settings.api_host, settings.api_port)
        announcer = asyncio.create_task(_announce_desk(server, settings, key), name="desk link")
    try:
        done, _ = await asyncio.wait(
            [*tasks, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED
        )
        for task in done:
            if task in tasks and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
            if task in tasks and task.get_name() == "api":
                raise RuntimeError("the API server stopped (is the port in use?)")
    finally:
        stop.set()
        if announcer is not None:
            announcer.cancel()
        await asyncio.gather(ingest_task, return_exceptions=True)
        await _drain(broker, settings, within=drain_timeout_s)
        stop_pipeline.set()
        if server is not None:
            server.should_exit = True
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for task, result in zip(tasks, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                log.error("%s stopped with %s: %s", task.get_name(), type(result).__name__, result)
        await engine.dispose()


def desk_link(settings: Settings, key: str | None) -> str:
    """The desk's address, with the key in the fragment: a browser never sends a fragment to the server,
    and the page removes it from the address bar as soon as it has read it (docs/desk.md)."""
    host = "127.0.0.1" if settings.api_host in ("0.0.0.0", "::", "") else settings.api_host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.api_port}/desk/" + (f"#key={key}" if key else "")


async def _announce_desk(server: QuietSignalsServer, settings: Settings, key: str | None) -> None:
    """Once the API listens: one line on stdout (not the log, which may be collected: it holds the admin
    key) that the person who started the desk can open."""
    while not server.started:  # noqa: ASYNC110 - uvicorn's server has a flag for it, not an event
        await asyncio.sleep(0.05)
    sys.stdout.write(f"Desk: {desk_link(settings, key)}\n")
    sys.stdout.flush()


async def _drain(broker: MemoryBroker, settings: Settings, *, within: float) -> None:
    """Wait until the classifier and the router have committed everything on the in-memory bus."""
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        lag = broker.lag(settings.group("classifier"), settings.topic_raw) + broker.lag(
            settings.group("router"), settings.topic_classified
        )
        if lag == 0:
            return
        await asyncio.sleep(0.05)
    log.warning("stopping with mentions still in flight; they will be fetched again on the next start")


async def forget_unrouted(engine: AsyncEngine) -> int:
    """Forget seen entries that never reached the database, and poll every source at start.

    In one process the in-memory bus dies with the process, so an entry ingest published but the router
    never stored (a crash, a kill) would otherwise be skipped forever as 'already seen'; polling at once
    fetches it again. A lease left by a killed run belongs to no one now, so it is cleared too.
    """
    async with session_factory(engine)() as session, session.begin():
        result = await session.execute(
            delete(SeenEntryRow).where(~exists().where(MentionRow.id == SeenEntryRow.mention_id))
        )
        await session.execute(
            update(SourceRow).values(next_poll_at=None, lease_owner=None, lease_expires_at=None)
        )
    return int(getattr(result, "rowcount", 0) or 0)
