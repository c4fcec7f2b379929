"""`GET /v1/stream`: newly routed and escalated mentions as Server-Sent Events, resumable with Last-Event-ID.

The events are read from the departments' topics (`mentions.routed.<department>`, which carry both
`mention.routed` and `mention.escalated`) by a group-less reader per client (`Bus.reader`): every client
sees every event and no offsets are committed. Each event's `id` is the position just after it in every
partition of the streamed topics, so a client that reconnects with `Last-Event-ID` (or `?last_event_id=`)
resumes exactly after the last event it received: nothing missed, nothing twice. An event the broker no
longer holds (deleted by retention) cannot be replayed: the stream then resumes from the earliest it holds.

EventSource cannot send headers, so this route (and only this one) also takes the key as `?api_key=`;
the access log shows any `api_key=` as `api_key=[redacted]`.

A key that may read only some departments gets each routed event as those departments may see it: the
mention's other departments (`all_departments`) cut to the ones it reads, and `matched_rules` to the rules
that routed the event's own department. A revocation through this process ends the key's open streams
within a second; through another process, at the next periodic check (`MR_STREAM_KEY_RECHECK_S`).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, status
from fastapi.responses import StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import Receive, Scope, Send

from services.api.auth import Guard, check_read, get_principal
from services.api.deps import BusDep, SettingsDep
from shared.apikeys import Principal, authenticate
from shared.bus import Bus, Reader, Record
from shared.bus.codec import CE_TYPE_PREFIX
from shared.errors import is_transient
from shared.events import Department
from shared.settings import DEPARTMENTS, Settings

log = logging.getLogger(__name__)

EVENT_TYPES = frozenset({"mention.routed", "mention.escalated"})
# How long a browser waits before it reconnects, sent once at the start of every stream.
RETRY_MS = 3000
# Records per read; how often (at most) a stream looks at its client and the shutdown flag.
BATCH = 200
POLL_S = 1.0
# Longer ids are refused unread (5 departments of a few partitions take well under 200 characters).
MAX_ID_CHARS = 4096
# Seconds a client turned away for want of room should wait.
RETRY_AFTER_S = 5

_CE_TYPE = re.compile(rf"^{re.escape(CE_TYPE_PREFIX)}([a-z.]+)\.v\d+$")
_POSITION = re.compile(r"^(\d{1,9})\.(\d{1,19})$")


# --- event ids ------------------------------------------------------------------------------------


class InvalidEventId(ValueError):
    pass


def encode_event_id(positions: Mapping[str, Mapping[int, int]]) -> str:
    """`<department>:<partition>.<next offset>,…;<department>:…` for the positions per department.
    Partitions at offset 0 are left out: a partition an id does not name is read from its start."""
    return ";".join(
        f"{department}:" + ",".join(f"{p}.{o}" for p, o in sorted(parts.items()) if o > 0)
        for department, parts in sorted(positions.items())
    )


def decode_event_id(value: str) -> dict[str, dict[int, int]]:
    """The positions per department an id encodes; InvalidEventId when it is not one of ours."""
    if not value or len(value) > MAX_ID_CHARS:
        raise InvalidEventId("empty or too long")
    out: dict[str, dict[int, int]] = {}
    for segment in value.split(";"):
        department, sep, rest = segment.partition(":")
        if not sep or department not in DEPARTMENTS:
            raise InvalidEventId(f"{department!r} is not a department")
        if department in out:
            raise InvalidEventId(f"{department} appears twice")
        parts: dict[int, int] = {}
        for item in rest.split(",") if rest else ():
            match = _POSITION.match(item)
            if match is None:
                raise InvalidEventId(f"{item!r} is not <partition>.<offset>")
            partition, offset = int(match.group(1)), int(match.group(2))
            if partition in parts:
                raise InvalidEventId(f"partition {partition} of {department} appears twice")
            parts[partition] = offset
        out[department] = parts
    return out


# --- SSE framing ----------------------------------------------------------------------------------


def event_frame(record: Record) -> tuple[str, str] | None:
    """(event type, one-line JSON) of a routed or escalated event; None for anything else."""
    match = _CE_TYPE.match(record.headers.get("ce_type", ""))
    event_type = match.group(1) if match else None
    try:
        text = record.value.decode("utf-8")
        document: Any = None
        if event_type is None or "\n" in text or "\r" in text:
            document = json.loads(text)
    except (UnicodeDecodeError, ValueError):
        log.warning("stream: %s[%d]@%d is not JSON; skipped", record.topic, record.partition, record.offset)
        return None
    if event_type is None:
        event_type = document.get("type") if isinstance(document, dict) else None
    if event_type not in EVENT_TYPES:
        return None
    if document is not None:
        # A data line ends at a line break: JSON spread over lines is written again on one.
        text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    return event_type, text


def for_departments(event_type: str, data: str, readable: frozenset[str]) -> str | None:
    """A routed event as a key of the `readable` departments may see it: only those of the mention's
    other departments, and only the rules that routed the event's own department (its assignment names
    them). Escalations name one department and no rules: unchanged. None for a routed event that is not
    a JSON object: what it holds cannot be cut, so it is not shown."""
    if event_type != "mention.routed":
        return data
    try:
        document = json.loads(data)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    departments, matched = document.get("all_departments"), document.get("matched_rules")
    assignment = document.get("assignment")
    own = assignment.get("rules") if isinstance(assignment, dict) else None
    allowed = set(own) if isinstance(own, list) else set()
    cut = {
        "all_departments": [d for d in departments if d in readable] if isinstance(departments, list) else [],
        "matched_rules": [r for r in matched if r in allowed] if isinstance(matched, list) else [],
    }
    if all(document.get(name) == value for name, value in cut.items()):
        return data  # nothing to hide: the event as it was published
    return json.dumps(document | cut, ensure_ascii=False, separators=(",", ":"))


def sse(event_id: str, event_type: str, data: str) -> str:
    return f"id: {event_id}\nevent: {event_type}\ndata: {data}\n\n"


# --- who may stream -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    principal: Principal
    key: str | None  # kept to re-check the key while the stream is open; never logged


class _RedactKeys(logging.Filter):
    """Masks `api_key=` values in uvicorn's access log lines (of every route: a key sent where it is not
    taken is a key all the same)."""

    _KEY = re.compile(r"(api(?:_|%5f)key=)[^&\s\"]*", re.IGNORECASE)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                self._KEY.sub(r"\1[redacted]", a) if isinstance(a, str) else a for a in record.args
            )
        return True


def _redact_access_log() -> None:
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _RedactKeys) for f in logger.filters):
        logger.addFilter(_RedactKeys())


async def stream_caller(
    request: Request,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None,
    api_key: Annotated[
        str | None,
        Query(
            description="The API key, for clients that cannot send headers (EventSource); prefer "
            "`Authorization: Bearer <key>`. Only this route takes it."
        ),
    ] = None,
) -> Caller:
    if api_key is not None and authorization is None and x_api_key is None:
        x_api_key = api_key
    principal = await get_principal(request, authorization, x_api_key)
    key = x_api_key
    if key is None and authorization is not None:
        key = authorization.partition(" ")[2].strip()
    # Without keys (MR_API_AUTH=false) there is nothing to re-check.
    return Caller(principal=principal, key=key if principal.key_id is not None else None)


# --- open streams ---------------------------------------------------------------------------------


class StreamHub:
    """The open streams of one API process: how many there may be, and the signal that ends them all."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self.closing = False

    def acquire(self) -> bool:
        if self.closing or self.open >= self.limit:
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open -= 1

    def close(self) -> None:
        self.closing = True


def hub_of(app: Any, settings: Settings) -> StreamHub:
    """The app's hub (made by the router's lifespan; here too for an app run without one)."""
    hub: StreamHub | None = getattr(app.state, "stream_hub", None)
    if hub is None:
        hub = app.state.stream_hub = StreamHub(settings.stream_max_clients)
    return hub


def close_streams(app: Any) -> None:
    """End every open stream of `app` (within a second): a server waits for open responses to finish
    before it stops, and a stream never finishes by itself. Their clients reconnect elsewhere."""
    hub: StreamHub | None = getattr(getattr(app, "state", None), "stream_hub", None)
    if hub is not None:
        hub.close()


class EventStreamResponse(StreamingResponse):
    """text/event-stream that releases its reader and its slot however the response ends."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[bytes], *, release: Callable[[], Awaitable[None]]) -> None:
        super().__init__(
            content,
            media_type=self.media_type,
            # no-transform: compressing proxies would hold events back; X-Accel-Buffering: nginx's buffer.
            headers={"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"},
        )
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._release()


@asynccontextmanager
async def _lifespan(app: Any) -> AsyncIterator[None]:
    # Runs inside the app's lifespan (FastAPI nests an included router's), so the settings are there.
    _redact_access_log()
    hub = app.state.stream_hub = StreamHub(app.state.settings.stream_max_clients)
    try:
        yield
    finally:
        hub.close()


stream_api = APIRouter(prefix="/v1", tags=["stream"], lifespan=_lifespan)


# --- the route ------------------------------------------------------------------------------------

_STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-Sent Events, one per routed or escalated mention: `id` (pass it back as "
        "`Last-Event-ID` to resume), `event` (`mention.routed` or `mention.escalated`), `data` (the "
        "event's JSON, as on the Kafka topic); a `: keep-alive` comment on a quiet stream.",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    401: {"description": "No valid API key."},
    403: {"description": "The key may not read a department asked for."},
    422: {"description": "Last-Event-ID is malformed or belongs to a stream of other departments."},
    503: {"description": "The broker is unavailable, or this API process streams to its limit of clients."},
}


@stream_api.get(
    "/stream",
    status_code=status.HTTP_200_OK,
    summary="Live stream of routed and escalated mentions (Server-Sent Events)",
    response_class=EventStreamResponse,
    response_model=None,
    responses=_STREAM_DOC,
)
async def stream(
    request: Request,
    caller: Annotated[Caller, Depends(stream_caller)],
    settings: SettingsDep,
    bus: BusDep,
    department: Annotated[
        list[Department] | None,
        Query(description="A department to stream (repeatable); default: every one the key may read."),
    ] = None,
    last_event_id: Annotated[
        str | None,
        Query(description="Resume after this event id (for EventSource polyfills; the header wins)."),
    ] = None,
    last_event_id_header: Annotated[
        str | None,
        Header(alias="Last-Event-ID", description="Resume after this event id (EventSource sends it)."),
    ] = None,
) -> EventStreamResponse:
    """The live stream of newly routed and escalated mentions, as Server-Sent Events.

    Resumable: reconnect with the last received `id` as the `Last-Event-ID` header (EventSource does this
    by itself) and the stream continues exactly after it. Events the broker no longer retains are gone:
    the stream then resumes from the earliest one still there."""
    principal = caller.principal
    departments = _departments(principal, department)
    topics = {settings.topic_routed(d): d for d in departments}
    start = _resume_positions(last_event_id_header or last_event_id, departments, topics)
    reader, release = await _open_reader(hub_of(request.app, settings), bus, topics, start)
    log.info("stream opened by %s for %s", principal.name, ", ".join(departments))
    events = _events(
        request=request,
        reader=reader,
        hub=hub_of(request.app, settings),
        settings=settings,
        caller=caller,
        topics=topics,
        sessions=request.app.state.sessions,
    )
    return EventStreamResponse(events, release=release)


def _departments(principal: Principal, asked: list[Department] | None) -> list[str]:
    """The departments to stream: those asked for, each readable by the key (403), else all it reads."""
    departments = sorted({d.value for d in asked} if asked else principal.readable)
    if not departments:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this key may not read any department's mentions")
    for name in departments:
        check_read(principal, name)
    return departments


def _resume_positions(
    resume_from: str | None, departments: list[str], topics: dict[str, str]
) -> dict[str, dict[int, int]] | None:
    """Where each topic resumes, from a Last-Event-ID of a stream of the same departments (422 else)."""
    if not resume_from:
        return None
    try:
        positions = decode_event_id(resume_from.strip())
    except InvalidEventId as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"Last-Event-ID is not an id of this stream: {exc}"
        ) from None
    if set(positions) != set(departments):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"Last-Event-ID belongs to a stream of {', '.join(sorted(positions))}, "
            f"not of {', '.join(departments)}",
        )
    return {topic: positions[d] for topic, d in topics.items()}


async def _open_reader(
    hub: StreamHub, bus: Bus, topics: dict[str, str], start: dict[str, dict[int, int]] | None
) -> tuple[Reader, Callable[[], Awaitable[None]]]:
    """A started reader of `topics` holding one of the hub's places, and the function that gives both
    back (once). 503 when the hub is full or closing, or the broker is away."""
    if not hub.acquire():
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "this API process is shutting down" if hub.closing else "too many open streams; retry later",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    reader = bus.reader(list(topics), start=start)
    released = False

    async def release() -> None:
        nonlocal released
        if not released:
            released = True
            hub.release()
            await reader.stop()

    try:
        await reader.start()
    except Exception as exc:
        await release()
        if not is_transient(exc):
            raise
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "the message broker is unavailable",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        ) from exc
    return reader, release


async def _events(
    *,
    request: Request,
    reader: Reader,
    hub: StreamHub,
    settings: Settings,
    caller: Caller,
    topics: dict[str, str],
    sessions: async_sessionmaker[AsyncSession],
) -> AsyncIterator[bytes]:
    positions: dict[str, dict[int, int]] = {d: {} for d in topics.values()}
    readable = None if caller.principal.all_departments else caller.principal.readable
    guard: Guard = request.app.state.guard
    revocations = guard.generation
    for topic, parts in reader.positions().items():
        positions[topics[topic]].update(parts)
    # An id without data dispatches no event but sets EventSource's last event id: a client that loses
    # the connection before the first event still resumes from where its stream began.
    yield f"retry: {RETRY_MS}\nid: {encode_event_id(positions)}\n\n".encode()
    poll_ms = int(min(POLL_S, settings.stream_keepalive_s) * 1000)
    now = time.monotonic()
    last_write, next_check = now, now + settings.stream_key_recheck_s
    while not hub.closing:
        if await request.is_disconnected():
            return
        records = await reader.getmany(timeout_ms=poll_ms, max_records=BATCH)
        out: list[str] = []
        for record in records:
            positions[topics[record.topic]][record.partition] = record.offset + 1
            frame = event_frame(record)
            if frame is not None:
                event_type, data = frame
                shown = data if readable is None else for_departments(event_type, data, readable)
                if shown is not None:
                    out.append(sse(encode_event_id(positions), event_type, shown))
        now = time.monotonic()
        if out:
            yield "".join(out).encode()
            last_write = now
        elif now - last_write >= settings.stream_keepalive_s:
            yield b": keep-alive\n\n"
            last_write = now
        if now >= next_check or guard.generation != revocations:
            # A key revoked through this process is checked at once, not at the next periodic check.
            revocations = guard.generation
            next_check = now + settings.stream_key_recheck_s
            if not await _still_allowed(sessions, caller, set(topics.values())):
                yield b": the API key no longer allows this stream\n\n"
                return


async def _still_allowed(
    sessions: async_sessionmaker[AsyncSession], caller: Caller, departments: set[str]
) -> bool:
    """The key is still valid and may still read every streamed department (a revocation, an expiry or a
    change of scopes ends an open stream). A database that is away does not end it."""
    if caller.key is None:
        return True
    try:
        async with sessions() as session:
            principal = await authenticate(session, caller.key)
    except Exception as exc:
        if not is_transient(exc):
            raise
        log.warning("stream: could not re-check an API key (%s); keeping the stream open", type(exc).__name__)
        return True
    return principal is not None and departments <= principal.readable
