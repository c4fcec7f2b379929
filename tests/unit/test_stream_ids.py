"""The live stream's event ids (positions per department and partition) and its SSE frames."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.api.stream import InvalidEventId, decode_event_id, encode_event_id, event_frame, sse
from shared.bus import Record
from shared.bus.codec import ce_headers
from shared.settings import DEPARTMENTS


def test_an_id_reads_department_partition_and_next_offset() -> None:
    event_id = encode_event_id({"support": {0: 12, 1: 0, 3: 7}, "pr": {2: 1}})
    # Departments sorted, partitions sorted, offset 0 left out (a partition not named starts at 0).
    assert event_id == "pr:2.1;support:0.12,3.7"
    assert decode_event_id(event_id) == {"pr": {2: 1}, "support": {0: 12, 3: 7}}


def test_a_department_with_nothing_read_yet_keeps_its_place() -> None:
    assert encode_event_id({"rnd": {0: 0, 1: 0}}) == "rnd:"
    assert decode_event_id("rnd:") == {"rnd": {}}


positions = st.dictionaries(
    st.sampled_from(DEPARTMENTS),
    st.dictionaries(st.integers(0, 10_000), st.integers(0, 2**62), max_size=64),
    min_size=1,
)


@given(positions)
def test_decode_inverts_encode(value: dict[str, dict[int, int]]) -> None:
    expected = {d: {p: o for p, o in parts.items() if o > 0} for d, parts in value.items()}
    assert decode_event_id(encode_event_id(value)) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "garbage",
        "support",
        "hr:0.1",
        "support:0.1;support:1.1",
        "support:0.1,0.2",
        "support:0",
        "support:-1.2",
        "support:0.x",
        "support:0.1,",
        "support:0.1;",
        " support:0.1",
        "support:1e3.1",
        "support:0.99999999999999999999",
        "support:" + ",".join(f"{p}.1" for p in range(1000)),
    ],
)
def test_anything_else_is_refused(bad: str) -> None:
    with pytest.raises(InvalidEventId):
        decode_event_id(bad)


def _record(value: bytes, *, event_type: str | None) -> Record:
    headers = ce_headers(key="m1", event_type=event_type, source="/t") if event_type else {}
    return Record(topic="t", partition=0, offset=0, key="m1", value=value, headers=headers)


def test_frames_take_the_type_from_ce_type_and_the_json_as_it_is() -> None:
    value = b'{"type": "mention.escalated", "mention_id": "m1"}'
    assert event_frame(_record(value, event_type="mention.escalated")) == (
        "mention.escalated",
        value.decode(),
    )


def test_frames_fall_back_to_the_type_field_and_keep_data_on_one_line() -> None:
    value = json.dumps({"type": "mention.routed", "text": "two\nlines"}, indent=2).encode()
    frame = event_frame(_record(value, event_type=None))
    assert frame is not None
    event_type, data = frame
    assert event_type == "mention.routed"
    assert "\n" not in data and json.loads(data) == json.loads(value)
    assert sse("support:0.1", event_type, data).count("\n") == 4


def test_other_events_and_unreadable_values_are_skipped() -> None:
    assert event_frame(_record(b'{"type": "mention.classified"}', event_type="mention.classified")) is None
    assert event_frame(_record(b'{"type": "mention.alert"}', event_type=None)) is None
    assert event_frame(_record(b"\xff\xfe", event_type=None)) is None
    assert event_frame(_record(b"not json", event_type=None)) is None
