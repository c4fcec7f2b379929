"""API keys over REST (admin only): create (the key is in the answer, once), list, revoke."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Request, Response, status
from pydantic import BaseModel, Field

from services.api.auth import AdminDep, Guard
from services.api.deps import ActorDep, SessionDep
from services.api.inputs import RequestModel, UtcDatetime
from services.api.schemas import ActingKey, RowModel, from_row
from shared.apikeys import InvalidScope, create_key, list_keys, revoke
from shared.settings import DEPARTMENTS

keys_api = APIRouter(prefix="/v1/keys", tags=["keys"])


# The scopes shared/apikeys.py takes, as a pattern in the document (so that clients and the fuzzer know).
SCOPE_PATTERN = rf"^(admin|push|(read|write):(\*|{'|'.join(DEPARTMENTS)}))$"


class KeyCreate(RequestModel):
    name: str = Field(min_length=1, max_length=200, description="Who or what uses it.")
    scopes: list[Annotated[str, Field(max_length=40, pattern=SCOPE_PATTERN)]] = Field(
        min_length=1,
        max_length=20,
        description="admin, push, read:<department>, write:<department> (department or *).",
    )
    expires_at: UtcDatetime | None = None


class KeyPublic(RowModel):
    id: str
    name: str
    scopes: list[str]
    created_at: datetime
    created_by: str
    created_by_key: ActingKey | None = Field(description="The key that made it (null: the command line).")
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class KeyCreated(KeyPublic):
    key: str = Field(description="The key itself: shown this once, stored only as a hash.")


class KeyList(BaseModel):
    items: list[KeyPublic]


@keys_api.post("", response_model=KeyCreated, status_code=status.HTTP_201_CREATED)
async def create(session: SessionDep, admin: AdminDep, actor: ActorDep, body: KeyCreate) -> KeyCreated:
    """Make a key. Its secret is in this answer only."""
    try:
        made = await create_key(
            session, name=body.name, scopes=body.scopes, created_by=actor, expires_at=body.expires_at
        )
    except InvalidScope as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    await session.commit()
    return from_row(KeyCreated, made.row, key=made.key)


@keys_api.get("", response_model=KeyList)
async def list_all(session: SessionDep, admin: AdminDep) -> KeyList:
    return KeyList(items=[KeyPublic.model_validate(r) for r in await list_keys(session)])


@keys_api.delete(
    "/{key_id}", status_code=status.HTTP_204_NO_CONTENT, responses={404: {"description": "No such key"}}
)
async def revoke_key(request: Request, session: SessionDep, admin: AdminDep, key_id: str) -> Response:
    """Revoke a key. This API process refuses it from this answer on (its open streams end within a
    second); the other API processes within `MR_API_KEY_CACHE_S` (10 s), when their cached entry runs
    out, and their open streams within `MR_STREAM_KEY_RECHECK_S`."""
    row = await revoke(session, key_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no key {key_id!r}")
    await session.commit()
    guard: Guard = request.app.state.guard
    guard.forget(key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
