"""Every error as RFC 9457 problem details (`application/problem+json`), never a stack trace.

`HTTPException`s raised by the routes, request validation (422, with the invalid fields listed) and any
unexpected exception (500, logged with its traceback server-side, the client gets an opaque id to quote).
Database outages are 503s (services/api/errors.py).
"""

from __future__ import annotations

import logging
import uuid
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.workflow import ClaimConflict, InvalidTransition, NotFound, VersionMismatch, WorkflowError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://mention-router.dev/problems/"


class ProblemException(StarletteHTTPException):
    """An HTTP error whose problem body carries extension members (RFC 9457 §3.2) beside `detail`."""

    def __init__(self, status_code: int, detail: str, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(status_code, detail)
        self.extra = {
            k: v for k, v in (extra or {}).items() if k not in ("type", "title", "status", "detail")
        }


# The HTTP status of each error the assignment workflow raises (the workflow itself speaks no HTTP).
WORKFLOW_STATUS: dict[type[WorkflowError], int] = {
    NotFound: 404,
    InvalidTransition: 409,
    ClaimConflict: 409,
    VersionMismatch: 412,
}


def workflow_problem(exc: WorkflowError) -> HTTPException:
    """The API's answer to a change the workflow refused: 404, 409 or 412 with the workflow's reason."""
    status_code = next((c for t, c in WORKFLOW_STATUS.items() if isinstance(exc, t)), 409)
    return HTTPException(status_code, str(exc))


def _title(status_code: int) -> str:
    try:
        return HTTPStatus(status_code).phrase
    except ValueError:
        return "Error"


def problem_response(
    status_code: int,
    detail: str,
    *,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": _title(status_code),
        "status": status_code,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    if extra:
        body.update(extra)
    return JSONResponse(body, status_code=status_code, media_type=PROBLEM_JSON, headers=headers)


async def http_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else _title(exc.status_code)
    return problem_response(
        exc.status_code,
        detail,
        instance=request.url.path,
        headers=dict(exc.headers or {}) or None,
        extra=getattr(exc, "extra", None),
    )


async def validation_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "location": ".".join(str(p) for p in e.get("loc", ())),
            "message": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in exc.errors()
    ]
    first = errors[0] if errors else {"location": "request", "message": "invalid"}
    return problem_response(
        422,
        f"invalid request: {first['location']}: {first['message']}"
        + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""),
        instance=request.url.path,
        extra={"errors": errors},
    )


async def unexpected_problem(request: Request, exc: Exception) -> JSONResponse:
    incident = uuid.uuid4().hex[:12]
    log.error("%s %s failed (incident %s)", request.method, request.url.path, incident, exc_info=exc)
    return problem_response(
        500,
        f"the request failed on an unexpected error; quote incident {incident} when reporting it",
        instance=request.url.path,
        extra={"incident": incident},
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, http_problem)
    app.add_exception_handler(RequestValidationError, validation_problem)
    app.add_exception_handler(Exception, unexpected_problem)


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "RFC 9457 problem details.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "incident": {"type": "string", "description": "500 only: quote it when reporting the error."},
        "rule_index": {"type": "integer", "description": "An invalid routing rule set: the rule (from 1)."},
        "rule": {"type": ["string", "null"], "description": "…its name."},
        "field": {"type": ["string", "null"], "description": "…the field, e.g. `when.topics_any`."},
        "reason": {"type": "string", "description": "…what is wrong with it."},
        "errors": {
            "type": "array",
            "description": "422 only: each invalid field.",
            "items": {
                "type": "object",
                "properties": {
                    "location": {"type": "string"},
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
}

_DESCRIPTIONS = {
    400: "The body cannot be parsed",
    401: "No API key, or one that is unknown, revoked or expired",
    403: "The key's scopes do not allow this",
    404: "Not found (or outside the key's departments)",
    413: "The request body is too large",
    422: "The request is invalid",
    429: "Rate limit exceeded; see Retry-After",
    500: "Unexpected error (an incident id to quote)",
    503: "The database or the broker is unavailable; see Retry-After",
}
PUBLIC_PATHS = ("/healthz", "/readyz", "/metrics", "/asyncapi.json", "/v1/schemas")


def _retry_after() -> dict[str, Any]:
    return {"Retry-After": {"schema": {"type": "string"}, "description": "Seconds to wait."}}


def document_problems(schema: dict[str, Any]) -> dict[str, Any]:
    """Every error response of every operation as problem+json, and the codes any operation can answer
    (auth, validation, limits, outages) documented on each, so that clients and the fuzzer see the truth."""
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    components.setdefault("securitySchemes", {})["apiKey"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key (`mention-router keys create`); `X-API-Key: <key>` works too.",
    }
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            responses: dict[str, Any] = operation.setdefault("responses", {})
            codes = [422, 500]
            if path.startswith(PUBLIC_PATHS):
                operation["security"] = []
            else:
                operation.setdefault("security", [{"apiKey": []}])
                codes += [401, 403, 429, 503]
            if method in ("post", "put", "patch"):
                codes += [400, 413]
            if "{" in path:
                codes.append(404)
            for code in codes:
                responses.setdefault(str(code), {"description": _DESCRIPTIONS[code]})
            for status_code, response in responses.items():
                if status_code.isdigit() and int(status_code) >= 400:
                    response["content"] = problem
                    if int(status_code) in (429, 503):
                        response.setdefault("headers", {}).update(_retry_after())
    return schema
