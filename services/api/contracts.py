"""The contracts of the topics, served for department consumers: the AsyncAPI 3 document and the JSON
Schema of every event (the same as docs/asyncapi.json and docs/schemas/)."""

from __future__ import annotations

import functools
from typing import Any

from fastapi import APIRouter, HTTPException, status

from shared.schemas import asyncapi_document, event_schemas

contracts = APIRouter(tags=["contracts"])


@functools.cache
def _asyncapi() -> dict[str, Any]:
    return asyncapi_document()


@functools.cache
def _schemas() -> dict[str, dict[str, Any]]:
    return event_schemas()


@contracts.get("/asyncapi.json", response_model=dict[str, Any])
async def asyncapi() -> dict[str, Any]:
    """AsyncAPI 3.0: every topic, its events, their CloudEvents headers and payload schemas."""
    return _asyncapi()


@contracts.get("/v1/schemas", response_model=list[str])
async def schema_names() -> list[str]:
    """The event schemas there are."""
    return sorted(name.removesuffix(".schema.json") for name in _schemas())


@contracts.get(
    "/v1/schemas/{name}", response_model=dict[str, Any], responses={404: {"description": "No such event"}}
)
async def schema(name: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one event, e.g. `MentionRouted`."""
    found = _schemas().get(f"{name.removesuffix('.schema.json')}.schema.json")
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no event schema {name!r}; see /v1/schemas")
    return found
