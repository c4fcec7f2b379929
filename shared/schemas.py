"""JSON Schemas of the events on each topic, for department consumers (docs/schemas/)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from shared.events import MentionClassified, MentionIngested, MentionRouted

TOPIC_EVENTS: dict[str, type[BaseModel]] = {
    "mentions.raw": MentionIngested,
    "mentions.classified": MentionClassified,
    "mentions.routed.<department>": MentionRouted,
}


def event_schemas() -> dict[str, dict[str, Any]]:
    """File name → JSON Schema (draft 2020-12) of each event."""
    out: dict[str, dict[str, Any]] = {}
    for topic, model in TOPIC_EVENTS.items():
        schema = model.model_json_schema(mode="serialization")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["description"] = f"{(model.__doc__ or model.__name__).strip()} Topic: {topic}."
        out[f"{model.__name__}.schema.json"] = schema
    return out


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in event_schemas().items():
        path = directory / name
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written
