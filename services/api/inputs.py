"""Request input the database can take, checked at the edge: every refusal is a 422 problem, never a 500.

- Text: `refuse_unstorable` is a dependency of the whole app. It looks at every path parameter, every
  query parameter and every string (and key) of a JSON body, and refuses NUL characters and lone
  surrogates (shared/textsafe.py), which PostgreSQL cannot store or compare, wherever they are: a route
  added later is covered without doing anything.
- Date-times: `UtcDatetime` takes an RFC 3339 date-time with a zone only (no `0.5`, no Unix time, no
  date alone), and refuses one that leaves Python's range once converted to UTC
  (`9999-12-31T23:59:59-23:59`), which the driver would fail on; the value handed on is in UTC.
- JSON types: request bodies derive from `RequestModel`, which validates strictly (`false` is no number,
  `"3"` no integer, `0` no boolean); enum fields take their string values (`LAX`).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, BeforeValidator, ConfigDict, Strict, ValidationError, model_validator

from shared.textsafe import find_unstorable, unstorable

# RFC 3339's date-time (section 5.6): a zone is required; `T` and `Z` in either case.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")
DATETIME_HINT = "an RFC 3339 date-time with a zone, e.g. 2026-01-31T09:30:00Z"


def parse_datetime(value: object) -> datetime:
    """`value` as an aware datetime in UTC, or ValueError saying what is wanted."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and _RFC3339.fullmatch(value):
        # fromisoformat takes at most microseconds; RFC 3339 allows more digits (cut, not rounded).
        text = re.sub(r"(\.\d{6})\d+", r"\1", value.upper())
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a valid date-time ({exc}); expected {DATETIME_HINT}") from exc
    else:
        raise ValueError(f"expected {DATETIME_HINT}")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError(f"the date-time has no zone; expected {DATETIME_HINT}")
    try:
        return parsed.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError(f"{value} is out of range once converted to UTC") from exc


# The type of every date-time the API reads (query parameters and bodies); the document still says
# `format: date-time`.
UtcDatetime = Annotated[datetime, BeforeValidator(parse_datetime)]

# On a field of a RequestModel: an enum given by its value (strict validation wants an instance).
LAX = Strict(False)


def strict_json(model: type[BaseModel]) -> BeforeValidator:
    """On a RequestModel's field whose type is a model shared with the services (events are read
    leniently): the request's value validated as the JSON it was, strictly, like the body around it."""

    def validate(value: object) -> object:
        if not isinstance(value, dict):
            return value
        try:
            return model.model_validate_json(orjson.dumps(value), strict=True)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"{where}: {first['msg']}" if where else first["msg"]) from None
        except orjson.JSONEncodeError as exc:  # an integer beyond 64 bits
            raise ValueError(str(exc)) from None

    return BeforeValidator(validate)


class RequestModel(BaseModel):
    """A JSON request body: unknown fields refused, every value of the JSON type the document gives."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _integral_numbers(cls, data: Any) -> Any:
        """JSON has one number type: `60.0` is the integer 60 (JSON Schema says so too), where strict
        validation wants an int."""
        if isinstance(data, dict):
            return {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in data.items()}
        return data


def _refusal(location: tuple[Any, ...], why: str) -> RequestValidationError:
    return RequestValidationError(
        [{"loc": location, "msg": f"Value error, {why}", "type": "unstorable_text"}]
    )


async def refuse_unstorable(request: Request) -> None:
    """422 for a NUL or a lone surrogate anywhere in the path, the query or a JSON body."""
    for name, value in request.path_params.items():
        if isinstance(value, str) and (why := unstorable(value)) is not None:
            raise _refusal(("path", name), f"the text {why}")
    for name, value in request.query_params.multi_items():
        if (why := unstorable(value)) is not None:
            raise _refusal(("query", name), f"the text {why}")
        if (why := unstorable(name)) is not None:
            raise _refusal(("query", name), f"the parameter's name {why}")
    route = request.scope.get("route")
    if getattr(route, "body_field", None) is None or not await request.body():
        return
    try:
        # Parsed once: the route's own reading of the body has cached it on the request.
        body = await request.json()
    except ValueError:
        return  # not JSON: the route's own validation answers
    found = find_unstorable(body)
    if found is not None:
        location, why = found
        raise _refusal(("body", *location), why)
