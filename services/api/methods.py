"""`OPTIONS` and `405 Method Not Allowed` that name every method of a path.

A path can be served by routes of several routers (`GET /v1/mentions` lists, `POST /v1/mentions` pushes):
the router's own 405 named the methods of the first route it tried only, and it had no `OPTIONS` at all.
Here the methods come from the documented path that matches (the OpenAPI document, which clients and
the fuzzer go by; as OpenAPI says, a concrete path before a templated one: `/v1/keys/me` is not
`/v1/keys/{key_id}`, and several equally specific ones add up): `OPTIONS` answers 204 with them in
`Allow`, a method none of them takes answers 405 (problem+json) with the same `Allow`. The routes the
document leaves out (`/docs`, `/redoc`, `/openapi.json`) are answered the same way from their own
methods. A CORS preflight is answered before this, by the CORS middleware, when origins are configured.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send


class AllowedMethods:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._table: list[_Entry] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        allowed = self._methods(scope)
        method = scope["method"]
        if not allowed or method in allowed:
            await self.app(scope, receive, send)
            return
        allow = ", ".join([*sorted(allowed), "OPTIONS"]).encode()
        if method == "OPTIONS":
            await send({"type": "http.response.start", "status": 204, "headers": [(b"allow", allow)]})
            await send({"type": "http.response.body", "body": b""})
            return
        body = json.dumps(
            {
                "type": "about:blank",
                "title": "Method Not Allowed",
                "status": 405,
                "detail": f"{method} is not allowed here; allowed: {allow.decode()}",
                "instance": scope["path"],
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 405,
                "headers": [
                    (b"allow", allow),
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _methods(self, scope: Scope) -> set[str]:
        """The methods of the request's path (empty: no route has such a path; the router answers
        its 404)."""
        if self._table is None:
            app = scope["app"]
            self._table = _table(app.openapi(), app.routes)
        path = scope["path"]
        matches = [(params, methods) for pattern, params, methods in self._table if pattern.fullmatch(path)]
        fewest = min((params for params, _ in matches), default=0)
        return {method for params, methods in matches if params == fewest for method in methods}


_HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "trace")


# A path's pattern, how many parameters it has (fewer: more specific) and its methods.
_Entry = tuple[re.Pattern[str], int, frozenset[str]]


def _table(document: dict[str, Any], routes: list[Any]) -> list[_Entry]:
    """Each documented path as a pattern (a parameter: one path segment) with its methods. From the
    document rather than the routes: it is what clients and the fuzzer go by. Then the routes the document
    leaves out (its own page and the document itself), with the methods they take."""
    table: list[_Entry] = []
    paths = document.get("paths", {})
    for template, item in paths.items():
        pattern, params = re.subn(r"\\\{[^/]*?\\\}", "[^/]+", re.escape(template))
        methods = frozenset(m.upper() for m in item if m in _HTTP_METHODS)
        table.append((re.compile(pattern), params, methods))
    for route in routes:
        if isinstance(route, Route) and route.methods and route.path not in paths:
            table.append((route.path_regex, len(route.param_convertors), frozenset(route.methods)))
    return table
