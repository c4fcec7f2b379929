"""JSON Schemas of the events on each topic and the AsyncAPI 3 document that ties them to the topics, for
department consumers (docs/schemas/, docs/asyncapi.json, and served by the API)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from shared.bus.codec import CE_TYPE_PREFIX, CONTENT_TYPE
from shared.events import (
    SCHEMA_VERSION,
    MentionAlert,
    MentionClassified,
    MentionEscalated,
    MentionIngested,
    MentionRouted,
)
from shared.settings import DEPARTMENTS

# Topic (as named without MR_TOPIC_PREFIX) → the events it carries.
TOPIC_EVENTS: dict[str, tuple[type[BaseModel], ...]] = {
    "mentions.raw": (MentionIngested,),
    "mentions.classified": (MentionClassified,),
    "mentions.routed.<department>": (MentionRouted, MentionEscalated),
    "mentions.escalations": (MentionEscalated,),
    "mentions.alerts": (MentionAlert,),
}

# The message key (and ce_subject) of the events whose key is not the mention id.
_KEYS: dict[type[BaseModel], str] = {MentionAlert: "The taxonomy topic that spiked"}

_TOPIC_DOCS = {
    "mentions.raw": "Every new mention, as ingest (or the push API) normalised it. Key: the mention id.",
    "mentions.classified": "Mentions with their labels (topics, sentiment, language, intent, urgency).",
    "mentions.routed.<department>": (
        "One department's own topic: a `mention.routed` event for every mention routed (or reassigned) to "
        "it, and a `mention.escalated` event when one of its assignments passes its SLA. Tell them apart by "
        "the `ce_type` header or the `type` field."
    ),
    "mentions.escalations": "Every SLA escalation, all departments together.",
    "mentions.alerts": (
        "Spike alerts: a topic's mentions in the current clock hour far above its trailing hourly baseline, "
        "one event per topic and hour."
    ),
}


def _event_type(model: type[BaseModel]) -> str:
    return str(model.model_fields["type"].default)


def event_schemas() -> dict[str, dict[str, Any]]:
    """File name → JSON Schema (draft 2020-12) of each event."""
    out: dict[str, dict[str, Any]] = {}
    models: dict[type[BaseModel], list[str]] = {}
    for topic, events in TOPIC_EVENTS.items():
        for model in events:
            models.setdefault(model, []).append(topic)
    for model, topics in models.items():
        schema = model.model_json_schema(mode="serialization")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        where = ", ".join(topics)
        schema["description"] = f"{(model.__doc__ or model.__name__).strip()} Topic: {where}."
        out[f"{model.__name__}.schema.json"] = schema
    return out


def _headers_schema(event_type: str, key: str = "The mention id") -> dict[str, Any]:
    return {
        "type": "object",
        "description": "CloudEvents 1.0 binary-mode headers (Kafka protocol binding).",
        "required": ["ce_specversion", "ce_id", "ce_source", "ce_type", "content-type"],
        "properties": {
            "ce_specversion": {"type": "string", "const": "1.0"},
            "ce_id": {
                "type": "string",
                "description": "Stable per event: a re-delivered event keeps its id, so consumers can drop "
                "duplicates by it.",
            },
            "ce_source": {"type": "string", "examples": ["/mention-router/router"]},
            "ce_type": {"type": "string", "const": f"{CE_TYPE_PREFIX}{event_type}.v{SCHEMA_VERSION}"},
            "ce_subject": {"type": "string", "description": f"{key} (also the message key)."},
            "ce_time": {"type": "string", "format": "date-time"},
            "content-type": {"type": "string", "const": CONTENT_TYPE},
        },
    }


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 description of every topic: what a department consumer receives and how."""
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for name, schema in event_schemas().items():
        model_name = name.removesuffix(".schema.json")
        body = dict(schema)
        body.pop("$schema", None)
        defs = body.pop("$defs", {})
        schemas.update(defs)
        schemas[model_name] = body
    schemas = json.loads(json.dumps(schemas).replace('"#/$defs/', '"#/components/schemas/'))
    for models in TOPIC_EVENTS.values():
        for model in models:
            event_type = _event_type(model)
            key_doc = f"{_KEYS[model]}." if model in _KEYS else "The mention id (32 hex digits)."
            messages[model.__name__] = {
                "name": event_type,
                "title": model.__name__,
                "summary": (model.__doc__ or "").strip().splitlines()[0],
                "contentType": CONTENT_TYPE,
                "headers": _headers_schema(event_type, _KEYS.get(model, "The mention id")),
                "payload": {"$ref": f"#/components/schemas/{model.__name__}"},
                "bindings": {"kafka": {"key": {"type": "string", "description": key_doc}}},
            }
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for topic, models in TOPIC_EVENTS.items():
        channel_id = topic.replace(".<department>", "Department").replace(".", "_")
        channel: dict[str, Any] = {
            "address": topic.replace("<department>", "{department}"),
            "description": _TOPIC_DOCS[topic] + " With MR_TOPIC_PREFIX set, every address starts with it.",
            "messages": {m.__name__: {"$ref": f"#/components/messages/{m.__name__}"} for m in models},
        }
        if "<department>" in topic:
            channel["parameters"] = {
                "department": {
                    "enum": list(DEPARTMENTS),
                    "description": "The department that owns the topic.",
                }
            }
        channels[channel_id] = channel
        operations[f"receive_{channel_id}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "summary": f"Consume {topic}",
            "messages": [{"$ref": f"#/channels/{channel_id}/messages/{m.__name__}"} for m in models],
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Mention Router events",
            "version": f"{SCHEMA_VERSION}",
            "description": (
                "The Kafka topics of Mention Router. Messages are JSON (one pydantic model per event, with "
                "`schema_version`), keyed by mention id (alerts by topic), with CloudEvents binary-mode "
                "headers. Delivery is at-least-once: consumers drop duplicates by `ce_id`."
            ),
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {
            "local": {"host": "127.0.0.1:19092", "protocol": "kafka", "description": "deploy/local/kafka.sh"}
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def write_schemas(directory: Path) -> list[Path]:
    """The JSON Schemas into `directory` and the AsyncAPI document beside it (../asyncapi.json)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in event_schemas().items():
        path = directory / name
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    path = directory.parent / "asyncapi.json"
    path.write_text(json.dumps(asyncapi_document(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    written.append(path)
    return written
