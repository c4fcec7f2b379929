"""The one builder of `mention.routed` events (shared.events.MentionRouted), for the router (every routed
mention) and for a reassignment (shared.workflow): the same fields, the same JSON, the same CloudEvents
headers.

Built as JSON directly rather than through the pydantic model: the router publishes one event per
department of every mention, and the mention and its labels are serialised once (`json_of`, an
`orjson.Fragment` that every department's event copies as it is) and shared by all of them
(tests/unit/test_router_events.py holds the result to the model)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel

from shared.bus.base import OutMessage
from shared.bus.codec import ce_headers
from shared.events import SCHEMA_VERSION
from shared.settings import Settings


def json_of(model: BaseModel) -> orjson.Fragment:
    """A model's JSON (pydantic's serialiser: what `model_dump(mode="json")` holds, already as bytes), to
    embed in events without serialising it again."""
    return orjson.Fragment(model.__pydantic_serializer__.to_json(model))


def iso(when: datetime) -> str:
    """A UTC time the way pydantic writes it in JSON (`…Z`)."""
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class RoutedTarget:
    """One department's assignment of the mention, and the event's id (ce_id, what consumers dedupe by)."""

    department: str
    priority: str
    sla_minutes: int
    rules: Sequence[str]
    sla_due_at: datetime
    event_id: str


def routed_messages(
    settings: Settings,
    *,
    source: str,
    mention: dict[str, Any] | orjson.Fragment,
    classification: dict[str, Any] | orjson.Fragment,
    all_departments: Sequence[str],
    ingested_at: datetime,
    routed_at: datetime,
    matched_rules: Sequence[str],
    rules_version: int | None,
    tags: Sequence[str],
    targets: Iterable[RoutedTarget],
    mention_id: str | None = None,
) -> list[OutMessage]:
    """One `mention.routed` message per target, on its department's topic, keyed by the mention id.
    `mention` and `classification` are their JSON forms (`model_dump(mode="json")`, as stored, or
    `json_of`; with a Fragment for the mention, `mention_id` says its id)."""
    if mention_id is None:
        assert isinstance(mention, dict), "mention_id is needed with a serialised mention"
        mention_id = str(mention["id"])
    when = _iso_repeated(routed_at)
    base: dict[str, Any] = {
        "type": "mention.routed",
        "schema_version": SCHEMA_VERSION,
        "mention": mention,
        "classification": classification,
        "all_departments": list(all_departments),
        "ingested_at": iso(ingested_at),
        "routed_at": when,
        "matched_rules": list(matched_rules),
        "rules_version": rules_version,
        "tags": list(tags),
    }
    # What every department's event shares is serialised once; each event is that object, still open,
    # followed by the department's own fields.
    shared = orjson.dumps(base)[:-1] + b","
    out = []
    for t in targets:
        own = orjson.dumps(
            {
                "department": t.department,
                "assignment": {
                    "department": t.department,
                    "priority": t.priority,
                    "sla_minutes": t.sla_minutes,
                    "rules": list(t.rules),
                },
                "sla_due_at": _iso_repeated(t.sla_due_at),
            }
        )
        out.append(
            OutMessage(
                topic=settings.topic_routed(t.department),
                key=mention_id,
                value=b"".join((shared, memoryview(own)[1:])),
                headers=ce_headers(
                    key=mention_id, event_type="mention.routed", source=source, event_id=t.event_id, time=when
                ),
            )
        )
    return out


_ISO: dict[datetime, str] = {}


def _iso_repeated(when: datetime) -> str:
    """`iso` of a time that repeats in many events (a batch's routing time, its SLA due times)."""
    text = _ISO.get(when)
    if text is None:
        if len(_ISO) >= 256:
            _ISO.clear()
        text = _ISO[when] = iso(when)
    return text
