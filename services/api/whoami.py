"""`GET /v1/keys/me`: what the calling key is and may do.

A client (the desk, a department's tool) learns from it which departments to show and which buttons to
offer, instead of probing routes for 403s. Any valid key may ask about itself; nothing here tells a key
about any other key.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from services.api.auth import PrincipalDep
from shared.settings import DEPARTMENTS

whoami_api = APIRouter(prefix="/v1/keys", tags=["keys"])


class KeySelf(BaseModel):
    id: str | None = Field(description="The key's id; null when keys are switched off (MR_API_AUTH=false).")
    name: str
    scopes: list[str] = Field(description="As the key was made: admin, push, read:<d>, write:<d>.")
    admin: bool = Field(description="Manages sources, rules, taxonomy and keys; reads every department.")
    push: bool = Field(description="May push mentions (POST /v1/mentions).")
    read: list[str] = Field(description="The departments whose mentions and assignments it may see.")
    write: list[str] = Field(description="The departments whose assignments it may change.")
    expires_at: datetime | None


@whoami_api.get("/me", response_model=KeySelf)
async def me(principal: PrincipalDep) -> KeySelf:
    """The calling key: its name, scopes, and the departments they let it read and change (in the
    departments' usual order)."""
    return KeySelf(
        id=principal.key_id,
        name=principal.name,
        scopes=sorted(principal.scopes),
        admin=principal.is_admin,
        push=principal.can_push(),
        read=[d for d in DEPARTMENTS if d in principal.readable],
        write=[d for d in DEPARTMENTS if d in principal.writable],
        expires_at=principal.expires_at,
    )
