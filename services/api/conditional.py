"""Conditional GETs: an `ETag` on the answers tools poll (a mention, a list page, the queue statistics),
`Last-Modified` where the API can date the last change (a mention), and `304 Not Modified` to
`If-None-Match` / `If-Modified-Since` (RFC 9110 §13).

A tool that polls sends back the `ETag` it was given; when nothing it would see has changed it gets a 304
with no body, and the API has read only what decides that (services/api/queries/validators.py), not the
answer itself. The tags are weak (`W/"…"`): they name what the caller sees, for its key (two keys of
different departments never share one), not the bytes. `If-None-Match` wins over `If-Modified-Since`, as
the RFC says. Dates have a second's resolution, so a `Last-Modified` in the current second is not sent
(a change later in that second could not be told apart); the `ETag` has no such gap.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime

from fastapi import Request, Response

from shared.apikeys import Principal

# Every conditional answer may be stored by the client, and must be revalidated before each use.
CACHE_CONTROL = "private, no-cache"
# Set in a request's ASGI scope by services/api/revalidate.py when it found the client's copy stale: what
# it read (True, or the queue figures), so that the route does not read it again.
STALE_COPY = "mention_router.stale_copy"


def etag(principal: Principal, parts: Iterable[object]) -> str:
    """A weak entity tag for what `principal` sees, made of `parts` (each part's str)."""
    digest = hashlib.blake2b(digest_size=12)
    digest.update(_scope(principal).encode())
    for part in parts:
        digest.update(b"\x1f")
        digest.update(str(part).encode())
    return f'W/"{digest.hexdigest()}"'


def _scope(principal: Principal) -> str:
    return "*" if principal.all_departments else ",".join(sorted(principal.readable))


def none_match(request: Request) -> list[str] | None:
    """The tags of `If-None-Match` (opaque parts, weakness dropped; `*` as is), or None without one."""
    return tags_of(request.headers.get("if-none-match"))


def tags_of(header: str | None) -> list[str] | None:
    if header is None:
        return None
    return [t.strip().removeprefix("W/") for t in header.split(",") if t.strip()]


def is_fresh(request: Request, tag: str, last_modified: datetime | None = None) -> bool:
    """Whether the client's copy (by `If-None-Match`, else by `If-Modified-Since`) is current."""
    return fresh(
        request.headers.get("if-none-match"), request.headers.get("if-modified-since"), tag, last_modified
    )


def fresh(
    if_none_match: str | None, if_modified_since: str | None, tag: str, last_modified: datetime | None = None
) -> bool:
    """`is_fresh` from the two headers' values (services/api/revalidate.py has no Request)."""
    tags = tags_of(if_none_match)
    if tags is not None:
        return "*" in tags or tag.removeprefix("W/") in tags
    shown = _shown(last_modified)
    if if_modified_since is None or shown is None:
        return False
    try:
        client = parsedate_to_datetime(if_modified_since)
    except (TypeError, ValueError, IndexError):
        return False  # not a date: ignored, as the RFC says
    if client.tzinfo is None:
        client = client.replace(tzinfo=UTC)
    return shown <= client


def _shown(last_modified: datetime | None) -> datetime | None:
    """`last_modified` as an HTTP date can carry it (whole seconds), or None if it is the current
    second's (see the module's docstring)."""
    if last_modified is None:
        return None
    whole = last_modified.astimezone(UTC).replace(microsecond=0)
    now = datetime.now(UTC).replace(microsecond=0)
    return whole if whole < now else None


def headers(tag: str, last_modified: datetime | None = None) -> dict[str, str]:
    out = {"ETag": tag, "Cache-Control": CACHE_CONTROL}
    shown = _shown(last_modified)
    if shown is not None:
        out["Last-Modified"] = format_datetime(shown, usegmt=True)
    return out


def not_modified(tag: str, last_modified: datetime | None = None) -> Response:
    return Response(status_code=304, headers=headers(tag, last_modified))


def json_response(body: bytes, tag: str, last_modified: datetime | None = None) -> Response:
    return Response(body, media_type="application/json", headers=headers(tag, last_modified))
