"""Who is calling, what they may do, and how often: API keys, scopes, per-key rate limits.

Every route but the health checks and the contracts takes a key, as `Authorization: Bearer
<key>` or `X-API-Key: <key>` (401 without a valid one). Scopes decide the rest (shared/apikeys.py):
routes filter what they read to the caller's departments in the query itself (`Principal.readable`), a
department's assignment outside them does not exist for the caller (404), and a change it may read but
not write is refused (403). With `MR_API_AUTH=false` every caller is an anonymous admin (development).
The metrics are not served here at all, but on the metrics port (services/api/metrics.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request, status
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.apikeys import ANONYMOUS_ADMIN, KEY_RE, Principal, authenticate, create_key, touch
from shared.db import ApiKeyRow
from shared.events import utcnow
from shared.settings import Settings

# `last_used_at` is written at most this often per key.
TOUCH_S = 60.0
# Keys a process remembers at most (a flood of distinct valid keys empties the cache, never grows it).
CACHE_MAX = 10_000


@dataclass
class _Bucket:
    tokens: float
    at: float


class Guard:
    """Per-process state of the API's authentication: the key cache and the rate-limit buckets.

    A key found valid is trusted for `MR_API_KEY_CACHE_S` (never past its expiry) without asking the
    database again. A revocation through this process (`forget`) takes effect at once; one made through
    another process reaches this one when the cached entry runs out. `clock` (monotonic seconds) is
    replaceable for tests."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self._cache: dict[str, tuple[float, Principal]] = {}  # key -> (trusted until, principal)
        self._touched: dict[str, float] = {}
        self._buckets: dict[str, _Bucket] = {}
        # Bumped by every revocation: a lookup that began before one does not cache what it read.
        self._generation = 0

    def cached(self, key: str) -> Principal | None:
        """The principal of `key` if this process trusts it now, without asking the database."""
        cached = self._cache.get(key)
        if cached is not None and self.clock() < cached[0]:
            return cached[1]
        return None

    async def principal(self, sessions: async_sessionmaker[AsyncSession], key: str) -> Principal | None:
        known = self.cached(key)
        if known is not None:
            return known
        now = self.clock()
        generation = self._generation
        async with sessions() as session:
            found = await authenticate(session, key)
            key_id = found.key_id if found is not None else None
            if key_id is not None and now - self._touched.get(key_id, -math.inf) >= TOUCH_S:
                self._touched[key_id] = now
                await touch(session, key_id, now=utcnow())
                await session.commit()
        if found is None:
            self._cache.pop(key, None)
            return None
        until = now + self.settings.api_key_cache_s
        if found.expires_at is not None:
            until = min(until, now + (found.expires_at - utcnow()).total_seconds())
        if until > now and generation == self._generation:
            if len(self._cache) >= CACHE_MAX:
                self._cache.clear()
            self._cache[key] = (until, found)
        return found

    def forget(self, key_id: str) -> None:
        """Stop trusting `key_id` at once (call after the revocation is committed)."""
        self._generation += 1
        for key in [k for k, (_, p) in self._cache.items() if p.key_id == key_id]:
            del self._cache[key]

    @property
    def generation(self) -> int:
        """Changes with every revocation through this process: an open stream that sees it change checks
        its key again at once instead of at its next periodic check."""
        return self._generation

    def allow(self, who: str) -> float:
        """0 when `who` may make a request now, else the seconds until it may (token bucket)."""
        rate, burst = self.settings.api_rate_limit_per_s, self.settings.api_rate_limit_burst
        if rate <= 0:
            return 0.0
        now = time.monotonic()
        bucket = self._buckets.get(who)
        if bucket is None:
            if len(self._buckets) > 100_000:
                self._buckets.clear()
            bucket = self._buckets[who] = _Bucket(tokens=float(burst), at=now)
        bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.at) * rate)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / rate


# Set in a request's ASGI scope once the rate limit has counted it.
RATE_COUNTED = "mention_router.rate_counted"


def key_of(authorization: str | None, x_api_key: str | None) -> str | None:
    """The API key of a request ("" when none is given), or None for an `Authorization` header that is
    not `Bearer <key>`."""
    if x_api_key is not None:
        return x_api_key
    if authorization is None:
        return ""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def rate_key(principal: Principal, client_host: str | None) -> str:
    """Whose token bucket a request draws on: its key's, or (without authentication) its address's."""
    return f"key:{principal.key_id}" if principal.key_id is not None else f"ip:{client_host or '-'}"


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})


async def get_principal(
    request: Request,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Principal:
    guard: Guard = request.app.state.guard
    if not guard.settings.api_auth:
        principal = ANONYMOUS_ADMIN
    else:
        key = key_of(authorization, x_api_key)
        if key is None:
            raise _unauthorized("use `Authorization: Bearer <API key>` or `X-API-Key: <API key>`")
        if not key:
            raise _unauthorized("an API key is required (`Authorization: Bearer <key>` or `X-API-Key`)")
        found = await guard.principal(request.app.state.sessions, key)
        if found is None:
            raise _unauthorized("the API key is unknown, revoked or expired")
        principal = found
    # services/api/revalidate.py may have counted this request already, then passed it on.
    who = rate_key(principal, request.client.host if request.client else None)
    wait = 0.0 if request.scope.get(RATE_COUNTED) else guard.allow(who)
    if wait > 0:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"rate limit of {guard.settings.api_rate_limit_per_s:g} requests/s exceeded; retry later",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
    request.state.principal = principal
    return principal


async def require_admin(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    if not principal.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this needs an admin key")
    return principal


async def require_push(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    if not principal.can_push():
        raise HTTPException(status.HTTP_403_FORBIDDEN, "pushing mentions needs a key with the `push` scope")
    return principal


def check_read(principal: Principal, department: str) -> None:
    """403 when the caller asks for a department (a filter, a stream) outside its scopes."""
    if department not in principal.readable:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"this key may not read {department}'s mentions")


def check_write(principal: Principal, department: str) -> None:
    """For a thing the caller can see: 403 when it may not change it."""
    if department not in principal.writable:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"this key may not change {department}'s assignments")


PrincipalDep = Annotated[Principal, Depends(get_principal)]
AdminDep = Annotated[Principal, Depends(require_admin)]
PushDep = Annotated[Principal, Depends(require_push)]


async def register_bootstrap_key(sessions: async_sessionmaker[AsyncSession], key: str) -> None:
    """Register `MR_API_BOOTSTRAP_KEY` as an admin key unless its id is already known (several API
    replicas may start at once: a conflict means another registered it)."""
    match = KEY_RE.match(key)
    if match is None:
        raise ValueError("MR_API_BOOTSTRAP_KEY must read mr_<8 hex digits>_<at least 20 URL-safe characters>")
    async with sessions() as session:
        if await session.get(ApiKeyRow, match.group(1)) is not None:
            return
        await create_key(
            session, name="bootstrap", scopes=["admin"], created_by="MR_API_BOOTSTRAP_KEY", key=key
        )
        try:
            await session.commit()
        except IntegrityError:
            await session.rollback()
