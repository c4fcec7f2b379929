"""Revalidation in front of the framework: a conditional GET of a mention or of the queue statistics whose
copy is still current gets its 304 here, before Starlette's middleware, FastAPI's routing, dependencies
and parameter validation run (0.3-0.45 ms of the API's CPU per request on the bench's machine, more than
deciding the 304 itself; docs/performance.md).

The answer is the route's own: the same statement decides it (services/api/queries/validators.py, the
queue figures of services/api/queues.py) and the same ETag and headers go out. Only the plain case is
answered here; anything else goes on to the route, which answers it in full:
- a path that is exactly `/v1/mentions/<id>` (letters, digits, `-` and `_`) or `/v1/queues` (with at most
  `window_hours`);
- an `If-None-Match` (or, for a mention, `If-Modified-Since`), no `Origin` (CORS is the middleware's);
- a key this process already trusts (services/api/auth.py's cache; never a database lookup here) or no
  authentication at all, and the rate limit not reached; a request counted here is not counted again;
- PostgreSQL (SQLite reads through the route) and no error: a failure, a mention the key cannot see, a
  copy that is not current — all go on to the route.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from services.api import conditional
from services.api.auth import RATE_COUNTED, Guard, key_of, rate_key
from services.api.queries import validators
from services.api.queues import WINDOW_DEFAULT_H, WINDOW_MAX_H, figures, statistics_of
from shared.apikeys import ANONYMOUS_ADMIN, Principal
from shared.events import utcnow

log = logging.getLogger(__name__)

_MENTION = re.compile(r"/v1/mentions/([0-9A-Za-z_-]{1,64})")
_WINDOW = re.compile(rb"window_hours=([1-9][0-9]{0,4})")


class Revalidation:
    """ASGI middleware: a 304 for a current copy, before the app; everything else goes to the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            headers = await self._not_modified(scope)
            if headers is not None:
                state = scope["app"].state
                state.revalidated_early = getattr(state, "revalidated_early", 0) + 1  # for the tests
                await send({"type": "http.response.start", "status": 304, "headers": headers})
                await send({"type": "http.response.body", "body": b""})
                return
        await self.app(scope, receive, send)

    async def _not_modified(self, scope: Scope) -> list[tuple[bytes, bytes]] | None:
        path = scope["path"]
        mention = _MENTION.fullmatch(path)
        if (mention is None and path != "/v1/queues") or path == "/v1/mentions/export":
            return None
        headers = _headers(scope)
        if headers is None:
            return None
        none_match, since = headers.get("if-none-match"), headers.get("if-modified-since")
        if (none_match is None and (since is None or mention is None)) or "origin" in headers:
            return None
        state = scope["app"].state
        guard = getattr(state, "guard", None)  # None before the lifespan has started
        principal = _principal(guard, headers, scope) if guard is not None else None
        if principal is None:
            return None
        try:
            async with state.read_sessions() as session:
                if session.get_bind().dialect.name != "postgresql":
                    return None
                if mention is not None:
                    now = utcnow()
                    found = await validators.detail_state(session, principal, mention.group(1))
                    if found is None:
                        return None
                    tag, modified = validators.detail_tag(principal, mention.group(1), found, now)
                else:
                    window = _window(scope["query_string"])
                    if window is None:
                        return None
                    step = state.settings.api_queue_stats_max_age_s
                    read = await figures(statistics_of(state), session, step, principal, window)
                    tag, modified = read.tag, None
        except Exception:  # the route answers every failure (404, 503, ...) in full
            log.debug("revalidation of %s left to the route", path, exc_info=True)
            return None
        if not conditional.fresh(none_match, since, tag, modified):
            # Stale: the route answers in full, without reading again what was read here.
            scope[conditional.STALE_COPY] = True if mention is not None else read
            return None
        return [(k.lower().encode(), v.encode()) for k, v in conditional.headers(tag, modified).items()]


def _headers(scope: Scope) -> Mapping[str, str] | None:
    """The request's headers by lowercase name, or None if any is not plain ASCII or comes twice (the
    route refuses or reads those)."""
    out: dict[str, str] = {}
    for raw, value in scope["headers"]:
        name = raw.decode("latin-1")
        if not value.isascii() or b"\x00" in value or name in out:
            return None  # a repeated header is the route's to read
        out[name] = value.decode("ascii")
    return out


def _principal(guard: Guard, headers: Mapping[str, str], scope: Scope) -> Principal | None:
    """Who asks, if that is known without the database and the rate limit lets the request through (it
    is then counted, and marked so that the route does not count it again)."""
    if not guard.settings.api_auth:
        principal = ANONYMOUS_ADMIN
    else:
        key = key_of(headers.get("authorization"), headers.get("x-api-key"))
        found = guard.cached(key) if key else None
        if found is None:
            return None
        principal = found
    client: Any = scope.get("client")
    if guard.allow(rate_key(principal, client[0] if client else None)) > 0:
        return None
    scope[RATE_COUNTED] = True
    return principal


def _window(query: bytes) -> int | None:
    """`window_hours` of the queue statistics from a query string that has nothing else, or None."""
    if not query:
        return WINDOW_DEFAULT_H
    match = _WINDOW.fullmatch(query)
    if match is None or int(match.group(1)) > WINDOW_MAX_H:
        return None
    return int(match.group(1))
