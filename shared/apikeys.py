"""API keys: their format, scopes and storage (hashed; the secret is shown once, when the key is made).

A key reads `mr_<id>_<secret>`: the id (8 hex digits) finds the row, the secret (32 random bytes,
URL-safe base64) is checked against its SHA-256 in constant time. A fast hash is right here: the secret
is random and long, so there is nothing to brute-force that a slow hash would protect.

Scopes:
- `admin`: everything, every department, and the management of sources, rules, taxonomy and keys;
- `read:<department>` / `write:<department>` (`*` for every department): that department's mentions and
  assignments (write includes read);
- `push`: POST /v1/mentions (integrations forwarding posts from elsewhere).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import ApiKeyRow
from shared.events import utcnow
from shared.settings import DEPARTMENTS

KEY_RE = re.compile(r"^mr_([0-9a-f]{8})_([A-Za-z0-9_-]{20,100})$")
_SCOPE_RE = re.compile(r"^(admin|push|(read|write):(\*|[a-z]+))$")


class InvalidScope(ValueError):
    pass


def validate_scopes(scopes: Iterable[str]) -> list[str]:
    """The scopes, checked and de-duplicated (in order); InvalidScope names the first bad one."""
    out: list[str] = []
    for scope in scopes:
        match = _SCOPE_RE.match(scope)
        if match is None or (match.group(3) not in (None, "*") and match.group(3) not in DEPARTMENTS):
            raise InvalidScope(
                f"unknown scope {scope!r}: use admin, push, read:<department> or write:<department> "
                f"(department one of {', '.join(DEPARTMENTS)}, or *)"
            )
        if scope not in out:
            out.append(scope)
    if not out:
        raise InvalidScope("a key needs at least one scope")
    return out


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who calls: a key's id, name and scopes (or the anonymous admin when keys are switched off), and
    when the key expires (so that a cached principal is not trusted past it)."""

    key_id: str | None
    name: str
    scopes: frozenset[str]
    expires_at: datetime | None = None

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes

    @property
    def readable(self) -> frozenset[str]:
        """The departments whose mentions and assignments this caller may see."""
        if self.is_admin or "read:*" in self.scopes or "write:*" in self.scopes:
            return frozenset(DEPARTMENTS)
        return frozenset(s.split(":", 1)[1] for s in self.scopes if s.startswith(("read:", "write:")))

    @property
    def writable(self) -> frozenset[str]:
        if self.is_admin or "write:*" in self.scopes:
            return frozenset(DEPARTMENTS)
        return frozenset(s.split(":", 1)[1] for s in self.scopes if s.startswith("write:"))

    @property
    def all_departments(self) -> bool:
        return self.readable == frozenset(DEPARTMENTS)

    def can_push(self) -> bool:
        return self.is_admin or "push" in self.scopes


ANONYMOUS_ADMIN = Principal(key_id=None, name="anonymous", scopes=frozenset({"admin"}))


@dataclass(frozen=True)
class Actor:
    """Who made a change, as the audit, activity and rule records keep it.

    `key_id` and `key_name` are the API key that authenticated the request: what a caller cannot choose.
    `name` is only a display name beside them (`X-Actor`, for a tool acting for its users; by default the
    key's name). A change the system makes by itself (the SLA escalation, the seed, the command line) or
    a request with keys switched off has no key."""

    name: str
    key_id: str | None = None
    key_name: str | None = None

    @classmethod
    def of(cls, principal: Principal, display: str | None = None) -> Actor:
        shown = (display or "").strip() or principal.name
        if principal.key_id is None:
            return cls(name=shown)
        return cls(name=shown, key_id=principal.key_id, key_name=principal.name)


def as_actor(actor: Actor | str) -> Actor:
    """A plain string is a system actor (no key): "sla", "seed", "cli", a test."""
    return actor if isinstance(actor, Actor) else Actor(name=actor)


@dataclass(frozen=True)
class NewKey:
    row: ApiKeyRow
    key: str  # the whole key: shown once, never stored


async def create_key(
    session: AsyncSession,
    *,
    name: str,
    scopes: Iterable[str],
    created_by: Actor | str,
    expires_at: datetime | None = None,
    key: str | None = None,
) -> NewKey:
    """Make a key (or register `key`, a full key made elsewhere, e.g. a bootstrap key from the
    environment). The caller commits."""
    checked = validate_scopes(scopes)
    creator = as_actor(created_by)
    if key is None:
        key_id = secrets.token_hex(4)
        secret = secrets.token_urlsafe(32)
        key = f"mr_{key_id}_{secret}"
    else:
        match = KEY_RE.match(key)
        if match is None:
            raise ValueError("an API key reads mr_<8 hex digits>_<at least 20 URL-safe characters>")
        key_id, secret = match.groups()
    row = ApiKeyRow(
        id=key_id,
        name=name,
        secret_hash=hash_secret(secret),
        scopes=checked,
        created_at=utcnow(),
        created_by=creator.name,
        created_by_key_id=creator.key_id,
        created_by_key_name=creator.key_name,
        expires_at=expires_at,
    )
    session.add(row)
    await session.flush()
    return NewKey(row=row, key=key)


async def authenticate(session: AsyncSession, key: str, *, now: datetime | None = None) -> Principal | None:
    """The key's principal; None for a malformed, unknown, wrong, revoked or expired key."""
    match = KEY_RE.match(key)
    if match is None:
        return None
    key_id, secret = match.groups()
    row = await session.get(ApiKeyRow, key_id)
    if row is None or not hmac.compare_digest(row.secret_hash, hash_secret(secret)):
        return None
    now = now or utcnow()
    if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
        return None
    return Principal(key_id=row.id, name=row.name, scopes=frozenset(row.scopes), expires_at=row.expires_at)


async def touch(session: AsyncSession, key_id: str, *, now: datetime) -> None:
    await session.execute(update(ApiKeyRow).where(ApiKeyRow.id == key_id).values(last_used_at=now))


async def revoke(session: AsyncSession, key_id: str, *, now: datetime | None = None) -> ApiKeyRow | None:
    row = await session.get(ApiKeyRow, key_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = now or utcnow()
        await session.flush()
    return row


async def list_keys(session: AsyncSession) -> list[ApiKeyRow]:
    return list(await session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.created_at, ApiKeyRow.id)))
