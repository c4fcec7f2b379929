"""Events to bus messages and back: CloudEvents headers, JSON values, poison on anything unreadable."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from shared.bus.base import OutMessage, Record
from shared.bus.codec import decode, encode
from shared.errors import PoisonMessage
from shared.events import (
    SCHEMA_VERSION,
    Classification,
    Mention,
    MentionClassified,
    MentionIngested,
    Sentiment,
    TopicLabel,
)

INGESTED_AT = datetime(2026, 2, 2, 10, 0, tzinfo=UTC)
CLASSIFIED_AT = datetime(2026, 2, 2, 10, 0, 5, tzinfo=UTC)


def _mention() -> Mention:
    return Mention(
        id="a" * 32,
        source_id="src-1",
        title="Caf\u00e9 crashes",
        text="It doesn\u2019t work \U0001f620",
        published_at=datetime(2026, 2, 2, 9, 0, tzinfo=UTC),
    )


def _ingested() -> MentionIngested:
    return MentionIngested(mention=_mention(), ingested_at=INGESTED_AT)


def _record(message: OutMessage, *, value: bytes | None = None) -> Record:
    return Record(
        topic=message.topic,
        partition=2,
        offset=41,
        key=message.key,
        value=message.value if value is None else value,
        headers=dict(message.headers),
    )


def test_encode_puts_cloudevents_headers() -> None:
    message = encode(topic="mentions.raw", key="a" * 32, event=_ingested(), source="/mention-router/ingest")
    assert message.topic == "mentions.raw"
    assert message.key == "a" * 32
    assert message.headers == {
        "ce_specversion": "1.0",
        "ce_id": f"{'a' * 32}:mention.ingested",
        "ce_source": "/mention-router/ingest",
        "ce_type": f"io.mentionrouter.mention.ingested.v{SCHEMA_VERSION}",
        "ce_subject": "a" * 32,
        "ce_time": "2026-02-02T10:00:00+00:00",
        "content-type": "application/json",
    }
    assert orjson.loads(message.value)["type"] == "mention.ingested"


def test_ce_time_is_the_time_of_the_latest_step() -> None:
    classified = MentionClassified(
        mention=_mention(),
        ingested_at=INGESTED_AT,
        classified_at=CLASSIFIED_AT,
        classification=Classification(
            sentiment=Sentiment.NEGATIVE,
            sentiment_score=-0.4,
            sentiment_confidence=0.7,
            topics=[TopicLabel(name="bug", confidence=0.55, evidence=["term:crashes"])],
            engine="rules",
            engine_version="rules-1+taxonomy-1",
        ),
    )
    message = encode(topic="t", key="k", event=classified, source="/s", event_id="explicit-id")
    assert message.headers["ce_time"] == CLASSIFIED_AT.isoformat()
    assert message.headers["ce_id"] == "explicit-id"
    assert decode(_record(message), MentionClassified) == classified


def test_a_republished_event_keeps_its_id() -> None:
    one = encode(topic="t", key="k", event=_ingested(), source="/s")
    two = encode(topic="t", key="k", event=_ingested(), source="/s")
    assert one.headers["ce_id"] == two.headers["ce_id"]


def test_encode_and_decode_round_trip() -> None:
    event = _ingested()
    assert decode(_record(encode(topic="t", key="k", event=event, source="/s")), MentionIngested) == event


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", "Invalid JSON"),
        (b"", "Invalid JSON"),
        (b"\xff\xfe\x00", "Invalid JSON"),
        (b"[]", "Input should be an object"),
        (b"null", "Input should be an object"),
    ],
)
def test_unreadable_bytes_are_poison(value: bytes, reason: str) -> None:
    record = _record(encode(topic="mentions.raw", key="k", event=_ingested(), source="/s"), value=value)
    with pytest.raises(PoisonMessage) as caught:
        decode(record, MentionIngested)
    # Where the message sits and why, for the operator reading the dead-letter topic.
    assert str(caught.value).startswith(
        "mentions.raw[2]@41: not a valid MentionIngested (1 error(s); first at"
    )
    assert reason in str(caught.value)


def test_a_missing_field_is_poison_and_named() -> None:
    payload = orjson.loads(_ingested().model_dump_json())
    del payload["mention"]["published_at"]
    record = _record(encode(topic="t", key="k", event=_ingested(), source="/s"), value=orjson.dumps(payload))
    with pytest.raises(PoisonMessage, match=r"1 error\(s\); first at mention\.published_at: Field required"):
        decode(record, MentionIngested)


def test_the_wrong_event_type_is_poison() -> None:
    payload = orjson.loads(_ingested().model_dump_json())
    payload["type"] = "mention.routed"
    record = _record(encode(topic="t", key="k", event=_ingested(), source="/s"), value=orjson.dumps(payload))
    with pytest.raises(PoisonMessage, match="first at type"):
        decode(record, MentionIngested)


def test_another_schema_version_is_poison() -> None:
    payload = orjson.loads(_ingested().model_dump_json())
    payload["schema_version"] = SCHEMA_VERSION + 1
    record = _record(encode(topic="t", key="k", event=_ingested(), source="/s"), value=orjson.dumps(payload))
    with pytest.raises(
        PoisonMessage,
        match=rf"^t\[2\]@41: schema_version {SCHEMA_VERSION + 1} is not supported "
        rf"\(this build reads {SCHEMA_VERSION}\)$",
    ):
        decode(record, MentionIngested)


def test_poison_is_not_retriable() -> None:
    assert PoisonMessage.retriable is False


def test_decode_drops_nul_characters_postgresql_cannot_store() -> None:
    mention = _mention().model_copy(update={"title": "nul\x00 here", "text": "a\x00b", "author": "\x00"})
    message = encode(
        topic="mentions.raw",
        key="a" * 32,
        event=MentionIngested(mention=mention, ingested_at=INGESTED_AT),
        source="/mention-router/ingest",
    )
    assert b"\\u0000" in message.value
    event = decode(_record(message), MentionIngested)
    assert (event.mention.title, event.mention.text, event.mention.author) == ("nul here", "ab", "")


def test_decode_keeps_an_escaped_backslash_before_u0000() -> None:
    # The JSON text `\\u0000` is a backslash followed by "u0000", not a NUL: it stays as it is.
    mention = _mention().model_copy(update={"text": "path C:\\u0000 and a real NUL \x00."})
    message = encode(
        topic="mentions.raw",
        key="a" * 32,
        event=MentionIngested(mention=mention, ingested_at=INGESTED_AT),
        source="/x",
    )
    assert decode(_record(message), MentionIngested).mention.text == "path C:\\u0000 and a real NUL ."


def test_decode_of_bytes_that_are_not_json_after_a_nul_escape_is_poison() -> None:
    message = encode(topic="mentions.raw", key="a" * 32, event=_ingested(), source="/x")
    with pytest.raises(PoisonMessage, match="not JSON"):
        decode(_record(message, value=b'{"mention": "\\u0000'), MentionIngested)
