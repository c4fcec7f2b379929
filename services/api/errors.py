"""Problem details (RFC 9457) for a database that is away: 503 with Retry-After instead of a 500.

While PostgreSQL is stopped, restarting or unreachable, every route that needs it answers
`503 Service Unavailable` with an `application/problem+json` body and a `Retry-After` header, so that a
client retries later instead of reporting a bug. Any other database error stays a 500 (services/api/
problems.py). `/readyz` answers 503 with its own Health body.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from services.api.problems import problem_response, unexpected_problem
from shared.errors import is_transient

log = logging.getLogger(__name__)

# Seconds a client should wait before retrying: long enough for a database failover or restart to make
# progress, short enough that a blip costs little.
RETRY_AFTER_S = 5


async def database_error(request: Request, exc: Exception) -> JSONResponse:
    """503 when the database is unavailable (transient), the 500 problem for any other database error."""
    if not (isinstance(exc, PoolTimeoutError) or is_transient(exc)):
        return await unexpected_problem(request, exc)
    log.warning(
        "%s %s: database unavailable (%s: %s)", request.method, request.url.path, type(exc).__name__, exc
    )
    return problem_response(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        f"the database is unavailable ({type(exc).__name__}); retry the request in {RETRY_AFTER_S} s",
        instance=request.url.path,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Register the handlers on `app`."""
    # DBAPIError covers the driver's errors as SQLAlchemy wraps them (OperationalError, InterfaceError,
    # a connection invalidated by a server shutdown); OSError is a refused or reset connection, which
    # asyncpg raises as it is while connecting (the broker's are answered in the routes that use it); the
    # pool's TimeoutError is a server too slow to hand out a connection.
    for exc_class in (DBAPIError, PoolTimeoutError, OSError):
        app.add_exception_handler(exc_class, database_error)
