"""The published JSON Schemas (docs/schemas/) are the ones the code produces, and events validate."""

from __future__ import annotations

import json

from shared.schemas import asyncapi_document, event_schemas
from shared.settings import REPO_ROOT


def test_published_schemas_are_current() -> None:
    for name, schema in event_schemas().items():
        path = REPO_ROOT / "docs" / "schemas" / name
        assert path.exists(), f"{path} is missing: run `mention-router schemas`"
        assert json.loads(path.read_text()) == json.loads(json.dumps(schema)), (
            f"{path} is out of date: run `mention-router schemas`"
        )


def test_the_published_asyncapi_document_is_current() -> None:
    path = REPO_ROOT / "docs" / "asyncapi.json"
    assert json.loads(path.read_text()) == json.loads(json.dumps(asyncapi_document())), (
        f"{path} is out of date: run `mention-router schemas`"
    )


def test_asyncapi_describes_every_topic_with_resolvable_references() -> None:
    doc = asyncapi_document()
    assert doc["asyncapi"] == "3.0.0"
    addresses = {c["address"] for c in doc["channels"].values()}
    assert addresses == {
        "mentions.raw",
        "mentions.classified",
        "mentions.routed.{department}",
        "mentions.escalations",
        "mentions.alerts",
    }
    routed = next(c for c in doc["channels"].values() if c["address"] == "mentions.routed.{department}")
    assert set(routed["messages"]) == {"MentionRouted", "MentionEscalated"}
    assert routed["parameters"]["department"]["enum"] == ["marketing", "pr", "support", "rnd", "product"]

    def refs(node: object) -> list[str]:
        if isinstance(node, dict):
            return [v for k, v in node.items() if k == "$ref" and isinstance(v, str)] + [
                r for v in node.values() for r in refs(v)
            ]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    for ref in refs(doc):
        target: object = doc
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(target, dict) and part in target, f"unresolvable {ref}"
            target = target[part]
    headers = doc["components"]["messages"]["MentionEscalated"]["headers"]
    assert headers["properties"]["ce_type"]["const"] == "io.mentionrouter.mention.escalated.v1"
    alert = doc["components"]["messages"]["MentionAlert"]
    assert alert["headers"]["properties"]["ce_type"]["const"] == "io.mentionrouter.mention.alert.v1"
    assert alert["bindings"]["kafka"]["key"]["description"].startswith("The taxonomy topic")


def test_every_topic_has_a_versioned_schema() -> None:
    schemas = event_schemas()
    assert set(schemas) == {
        "MentionIngested.schema.json",
        "MentionClassified.schema.json",
        "MentionRouted.schema.json",
        "MentionEscalated.schema.json",
        "MentionAlert.schema.json",
    }
    for schema in schemas.values():
        assert "schema_version" in schema["properties"]
        assert "Topic: mentions." in schema["description"]
