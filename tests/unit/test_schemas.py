"""The published JSON Schemas (docs/schemas/) are the ones the code produces, and events validate."""

from __future__ import annotations

import json

from shared.schemas import event_schemas
from shared.settings import REPO_ROOT


def test_published_schemas_are_current() -> None:
    for name, schema in event_schemas().items():
        path = REPO_ROOT / "docs" / "schemas" / name
        assert path.exists(), f"{path} is missing: run `mention-router schemas`"
        assert json.loads(path.read_text()) == json.loads(json.dumps(schema)), (
            f"{path} is out of date: run `mention-router schemas`"
        )


def test_every_topic_has_a_versioned_schema() -> None:
    schemas = event_schemas()
    assert set(schemas) == {
        "MentionIngested.schema.json",
        "MentionClassified.schema.json",
        "MentionRouted.schema.json",
    }
    for schema in schemas.values():
        assert "schema_version" in schema["properties"]
        assert "Topic: mentions." in schema["description"]
