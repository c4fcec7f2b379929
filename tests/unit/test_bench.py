"""The benchmark's own logic: the generated workload and the percentile it reports (no timing here)."""

from __future__ import annotations

from bench.generate import MAX_CHARS, MIN_CHARS, generate
from bench.pipeline import _percentile
from bench.router_bench import classified
from shared.bus.base import Record
from shared.bus.codec import decode
from shared.events import MentionClassified, MentionIngested
from shared.settings import Settings


def test_generated_mentions_are_realistic_valid_events() -> None:
    mentions = generate(300, run_id="unit", topic="p.mentions.raw")
    assert len({g.key for g in mentions}) == 300
    for i, g in enumerate(mentions):
        assert MIN_CHARS <= g.chars <= MAX_CHARS
        assert g.message.topic == "p.mentions.raw"
        assert g.message.headers["ce_type"] == "io.mentionrouter.mention.ingested.v1"
        record = Record(topic="p.mentions.raw", partition=0, offset=i, key=g.key, value=g.message.value)
        event = decode(record, MentionIngested)
        assert event.mention.id == g.key
        assert len(event.mention.text) == g.chars
    # Both kinds, several sources and lengths spread over the whole range.
    assert {g.chars // 300 for g in mentions} >= {1, 2, 3, 4}


def test_generation_is_deterministic_per_seed_and_new_per_run() -> None:
    a = generate(20, run_id="r1", topic="t")
    b = generate(20, run_id="r1", topic="t")
    c = generate(20, run_id="r2", topic="t")
    assert [(g.key, g.chars) for g in a] == [(g.key, g.chars) for g in b]
    assert not {g.key for g in a} & {g.key for g in c}


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert _percentile(values, 50) == 50.0
    assert _percentile(values, 99) == 99.0
    assert _percentile(values, 100) == 100.0
    assert _percentile([7.0], 99) == 7.0


def test_the_router_benchmark_feeds_what_the_classifier_publishes() -> None:
    settings = Settings().model_copy(update={"topic_prefix": "b."})
    messages = classified(50, run_id="unit", settings=settings)
    assert {m.topic for m in messages} == {"b.mentions.classified"}
    events = [MentionClassified.model_validate_json(m.value) for m in messages]
    assert [e.mention.id for e in events] == [m.key for m in messages]
    assert len({m.key for m in messages}) == 50
    assert all(m.headers["ce_type"] == "io.mentionrouter.mention.classified.v1" for m in messages)
    # The generated texts carry topics, so the router has real routing to do.
    assert sum(bool(e.classification.topics) for e in events) > 25
