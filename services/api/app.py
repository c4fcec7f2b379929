"""The API's composition: settings, database engine, routes, lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from sqlalchemy.ext.asyncio import AsyncEngine

from services.api import problems
from services.api.assignments import assignments_api
from services.api.auth import Guard, register_bootstrap_key
from services.api.contracts import contracts
from services.api.corrections import corrections_api
from services.api.deps import BusHolder
from services.api.desk import install_desk
from services.api.errors import install_problem_handlers
from services.api.inputs import refuse_unstorable
from services.api.keys import keys_api
from services.api.limits import BodySizeLimit
from services.api.mentions import mentions_api
from services.api.methods import AllowedMethods
from services.api.metrics import api_metrics
from services.api.push import push
from services.api.queues import queues_api
from services.api.revalidate import Revalidation
from services.api.routes import router, v1
from services.api.rules import rules_api
from services.api.sources import sources
from services.api.stats import stats_api
from services.api.stream import stream_api
from services.api.taxonomy import taxonomy_api
from services.api.threads import threads_api
from services.api.webhooks import webhook_worker, webhooks_api
from services.api.whoami import whoami_api
from shared.bus import Bus, build_bus
from shared.db import create_engine, session_factory
from shared.settings import Settings

DESCRIPTION = """
Mention Router routes what the world writes about a company to the department that should act.
This API serves the departments' tools: their queues, the mentions routed to them, and the sources.
"""


def create_app(settings: Settings, *, engine: AsyncEngine | None = None, bus: Bus | None = None) -> FastAPI:
    """The FastAPI app. With `engine` or `bus` the caller owns (and has started) them; otherwise the
    app's lifespan creates them, the bus on the first push so that reads work while the broker is away."""
    app = FastAPI(
        title="Mention Router",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=_lifespan(settings, engine, bus),
        # Text PostgreSQL cannot store (NUL, lone surrogates) anywhere in a request: 422 on every route.
        dependencies=[Depends(refuse_unstorable)],
    )
    problems.install(app)
    install_problem_handlers(app)  # database outages: 503 (after the catch-all, so they take precedence)
    _add_middleware(app, settings)
    _include_routes(app)
    install_desk(app)  # the web page at /desk/ (and / redirects there)
    # No /metrics here: it is served on the metrics port only (services/api/metrics.py).
    _document_problems(app)
    return app


def _lifespan(
    settings: Settings, engine: AsyncEngine | None, bus: Bus | None
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """What the app starts and stops: the database engine and the bus unless the caller owns them, the
    bootstrap key, the metrics and the webhook worker."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = engine is None
        db = engine or create_engine(
            settings.database_url,
            pool_size=settings.database_pool_size,
            server_settings={"max_parallel_workers_per_gather": str(settings.api_database_parallel_workers)},
            pre_ping=False,
        )
        app.state.settings = settings
        app.state.sessions = session_factory(db)
        # GET requests read in autocommit: no BEGIN and ROLLBACK round trips (15 % of the CPU of a detail
        # request, docs/performance.md); each statement sees the data committed when it starts, as in the
        # default READ COMMITTED transaction.
        app.state.read_sessions = session_factory(db.execution_options(isolation_level="AUTOCOMMIT"))
        app.state.guard = Guard(settings)
        if settings.api_auth and settings.api_bootstrap_key is not None:
            await register_bootstrap_key(app.state.sessions, settings.api_bootstrap_key.get_secret_value())
        holder = BusHolder(bus, started=True) if bus is not None else BusHolder(build_bus(settings))
        app.state.bus = holder
        try:
            # Their loops stop before the bus and the database.
            async with api_metrics(settings, app.state.sessions), webhook_worker(app, settings, holder):
                yield
        finally:
            if bus is None:
                await holder.close()
            if own:
                await db.dispose()

    return lifespan


def _add_middleware(app: FastAPI, settings: Settings) -> None:
    app.add_middleware(AllowedMethods)  # OPTIONS and 405 with every method of the path
    app.add_middleware(BodySizeLimit, max_bytes=settings.api_max_body_bytes)
    if settings.api_cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.api_cors_origins,
            allow_methods=["GET", "POST", "PATCH", "PUT", "DELETE"],
            allow_headers=[
                "Authorization",
                "X-API-Key",
                "X-Actor",
                "If-Match",
                "Content-Type",
                "Last-Event-ID",
            ],
            expose_headers=["ETag", "Retry-After", "Location"],
        )
    # Added last, so it runs first: a current copy's 304 before anything else (services/api/revalidate.py).
    app.add_middleware(Revalidation)


def _include_routes(app: FastAPI) -> None:
    """Every router, in the order of the OpenAPI document (and of matching: a fixed path before a
    parameter, as mentions.py does for the export)."""
    for routes in (
        router,
        v1,
        mentions_api,
        corrections_api,
        queues_api,
        sources,
        push,
        assignments_api,
        rules_api,
        stats_api,
        contracts,
        keys_api,
        taxonomy_api,
        stream_api,
        webhooks_api,
        whoami_api,
        threads_api,
    ):
        app.include_router(routes)


def _document_problems(app: FastAPI) -> None:
    """The OpenAPI document with the problem+json answers every route may give (problems.py)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = problems.document_problems(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
