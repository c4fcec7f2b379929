"""Events to and from bus messages: JSON values, CloudEvents 1.0 binary-mode headers."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from shared.bus.base import OutMessage, Record
from shared.errors import PoisonMessage
from shared.events import SCHEMA_VERSION

CE_TYPE_PREFIX = "io.mentionrouter."
CONTENT_TYPE = "application/json"

E = TypeVar("E", bound=BaseModel)


def encode(*, topic: str, key: str, event: BaseModel, source: str, event_id: str | None = None) -> OutMessage:
    """An event as a Kafka message. `event_id` (ce_id) defaults to the key plus the event type, so a
    re-published event keeps its id and consumers can drop duplicates by it."""
    event_type = str(getattr(event, "type", type(event).__name__))
    time = getattr(event, "routed_at", None) or getattr(event, "classified_at", None)
    time = time or getattr(event, "ingested_at", None) or getattr(event, "escalated_at", None)
    time = time or getattr(event, "detected_at", None)
    return OutMessage(
        topic=topic,
        key=key,
        value=event.model_dump_json().encode(),
        headers=ce_headers(
            key=key,
            event_type=event_type,
            source=source,
            event_id=event_id,
            time=time.isoformat() if time is not None else None,
        ),
    )


def ce_headers(
    *, key: str, event_type: str, source: str, event_id: str | None = None, time: str | None = None
) -> dict[str, str]:
    """The CloudEvents 1.0 binary-mode headers of an event of `event_type` (e.g. `mention.routed`)."""
    headers = {
        "ce_specversion": "1.0",
        "ce_id": event_id or f"{key}:{event_type}",
        "ce_source": source,
        "ce_type": f"{CE_TYPE_PREFIX}{event_type}.v{SCHEMA_VERSION}",
        "ce_subject": key,
        "content-type": CONTENT_TYPE,
    }
    if time is not None:
        headers["ce_time"] = time
    return headers


def decode(record: Record, model: type[E]) -> E:
    """Parse a record into `model`; anything unreadable is a PoisonMessage with the reason."""
    try:
        if b"\\u0000" in record.value:
            # PostgreSQL stores no NUL character in text or JSONB: drop it here, once, for every stage.
            event = model.model_validate(_without_nul(json.loads(record.value)))
        else:
            event = model.model_validate_json(record.value)
    except ValueError as exc:
        if not isinstance(exc, ValidationError):
            raise PoisonMessage(
                f"{record.topic}[{record.partition}]@{record.offset}: not JSON ({exc})"
            ) from None
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "value"
        raise PoisonMessage(
            f"{record.topic}[{record.partition}]@{record.offset}: not a valid {model.__name__} "
            f"({exc.error_count()} error(s); first at {where}: {first.get('msg')})"
        ) from None
    version = getattr(event, "schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise PoisonMessage(
            f"{record.topic}[{record.partition}]@{record.offset}: schema_version {version} is not "
            f"supported (this build reads {SCHEMA_VERSION})"
        )
    return event


def _without_nul(value: Any) -> Any:
    """`value` (parsed JSON) with every NUL character removed from its strings and keys."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    return value
