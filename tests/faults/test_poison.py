"""Poison messages among good ones: each lands in `mentions.dlq` with its reason, every good one is routed;
`mention-router dlq` lists the entries and replays selected ones.

On `mentions.raw`, among 5,000 good mentions: invalid JSON, an unknown schema version, a 2 MB payload (the
raw topic here accepts up to 4 MiB, as a broker configured for larger messages would) and a missing field;
on `mentions.classified`, mid-stream, the same kinds for the router. Afterwards the command line lists
them, and replays: a dry run (publishes nothing); the 2 MB payloads, whose dead letters are truncated, read
back from `mentions.raw` (dead-lettered again: nothing was fixed); and three dead letters of good mentions,
standing in for messages a stage rejected because of a bug since fixed, which then get routed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from devsupport.factories import classified_event
from devsupport.kafka import end_offsets_total
from devsupport.scenario import wait_for
from shared.bus.base import OutMessage, Record
from shared.bus.codec import encode
from shared.dlq import read_dead_letters
from shared.events import MentionIngested
from shared.stage import MAX_DEAD_LETTER_VALUE_BYTES, dead_letter
from tests.conftest import KafkaEnv
from tests.faults.harness import FaultPipeline, expected_departments, generated

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.postgres, pytest.mark.e2e]

N = 5_000
KINDS = {"invalid-json": 10, "schema-version": 10, "2mb": 3, "missing-field": 10}
REASONS = {
    "invalid-json": ("PoisonMessage", "Invalid JSON"),
    "schema-version": ("PoisonMessage", "schema_version 99 is not supported"),
    "2mb": ("PayloadTooLarge", "over the 1,000,000-byte limit"),
    "missing-field": ("PoisonMessage", "published_at: Field required"),
}


def _poison(kind: str, good: OutMessage, topic: str) -> OutMessage:
    """`good` made bad in the way `kind` says; same key and headers."""
    if kind == "invalid-json":
        value = good.value[: len(good.value) // 2]
    else:
        event: dict[str, Any] = json.loads(good.value)
        if kind == "schema-version":
            event["schema_version"] = 99
        elif kind == "2mb":
            event["mention"]["text"] = "Tessellate crashed again. " * 80_000
        else:
            del event["mention"]["published_at"]
        value = json.dumps(event).encode()
    return OutMessage(topic=topic, key=good.key, value=value, headers=good.headers)


@pytest.mark.timeout(150)
async def test_poison_is_dead_lettered_and_replayable(kafka: KafkaEnv, pg_url: str, tmp_path: Path) -> None:
    pipe = FaultPipeline(bootstrap=kafka.bootstrap, database_url=pg_url, prefix=kafka.prefix, logs=tmp_path)
    settings = pipe.settings
    await pipe.create_topics({"mentions.raw": {"max.message.bytes": str(4 * 1024 * 1024)}})
    spare = sum(KINDS.values()) + 3
    messages, mentions = generated(N + spare, settings=settings, run_id=kafka.prefix)
    good, extra = messages[:N], messages[N:]
    poison_kind: dict[str, str] = {}
    stream = list(good)
    for kind, count in KINDS.items():
        for _ in range(count):
            bad = _poison(kind, extra.pop(), settings.topic_raw)
            poison_kind[bad.key] = kind
            stream.insert(len(stream) * len(poison_kind) // (spare + 1), bad)
    fixed = extra  # three good mentions, dead-lettered below as if by a bug
    router_poison = []
    for i, kind in enumerate(k for k in KINDS if k != "2mb" for _ in range(3)):
        event = classified_event(1000 + i)
        message = encode(topic=settings.topic_classified, key=event.mention.id, event=event, source="/t")
        router_poison.append(_poison(kind, message, settings.topic_classified))
        poison_kind[message.key] = kind

    async def router_poison_mid_stream(sent: int) -> None:
        if sent in (1_000, 2_500, 4_000):
            await pipe.send(
                router_poison[:3]
                if sent == 1_000
                else router_poison[3:6]
                if sent == 2_500
                else router_poison[6:]
            )

    try:
        pipe.start("classifier")
        pipe.start("router")
        await pipe.send(stream, during=router_poison_mid_stream)
        await pipe.wait_stored(N, within=120)

        async def all_dead_lettered() -> bool:
            pipe.procs.check_alive()
            return await end_offsets_total(kafka.bootstrap, settings.topic_dlq) >= len(poison_kind)

        await wait_for(all_dead_lettered, within=60, what="every poison message in the DLQ")
        letters = await read_dead_letters(settings)
        assert sorted(d.key for d in letters) == sorted(poison_kind)
        for d in letters:
            kind = poison_kind[d.key]
            error_type, reason = REASONS[kind]
            assert (d.error_type, d.stage) == (
                error_type,
                "router" if d.original_topic == settings.topic_classified else "classifier",
            ), d.summary()
            assert reason in d.error, d.summary()
            assert d.original_offset is not None and d.failed_at is not None
            assert d.replay_headers()["ce_type"].startswith("io.mentionrouter.mention.")
            assert d.truncated == (kind == "2mb")
            if d.truncated:
                assert len(d.value) == MAX_DEAD_LETTER_VALUE_BYTES and d.value_bytes > 2_000_000

        # `dlq list`: a table, and JSON with where each came from and why.
        listed = pipe.cli("dlq", "list", "--limit", "5")
        assert listed.returncode == 0, listed.stderr
        lines = listed.stdout.splitlines()
        assert lines[0].split()[:4] == ["ENTRY", "KEY", "STAGE", "ERROR"] and len(lines) == 7, listed.stdout
        assert f"5 of {len(poison_kind)} dead letter(s)" in lines[-1]
        as_json = pipe.cli("dlq", "list", "--json")
        assert as_json.returncode == 0, as_json.stderr
        entries = json.loads(as_json.stdout)
        assert len(entries) == len(poison_kind)
        assert {
            "entry",
            "partition",
            "offset",
            "key",
            "stage",
            "error_type",
            "error",
            "failed_at",
            "original_topic",
        } <= entries[0].keys()

        # Three good mentions a stage "rejected by a bug", now fixed: in the DLQ as the classifier puts them.
        raw_before = await end_offsets_total(kafka.bootstrap, settings.topic_raw)
        records = [
            Record(settings.topic_raw, 0, raw_before + i, m.key, m.value, m.headers)
            for i, m in enumerate(fixed)
        ]
        await pipe.send(
            [
                dead_letter(
                    r, RuntimeError("a bug since fixed"), stage="classifier", dlq_topic=settings.topic_dlq
                )
                for r in records
            ]
        )
        by_key = {e["key"]: e["entry"] for e in json.loads(pipe.cli("dlq", "list", "--json").stdout)}
        dry = pipe.cli("dlq", "replay", "--all", "--error-type", "PayloadTooLarge", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert dry.stdout.count("would replay") == KINDS["2mb"], dry.stdout
        assert await end_offsets_total(kafka.bootstrap, settings.topic_raw) == raw_before
        args = [a for m in fixed for a in ("--offset", by_key[m.key])]
        replayed = pipe.cli("dlq", "replay", *args)
        assert replayed.returncode == 0, replayed.stderr
        assert "3 message(s) published" in replayed.stdout, replayed.stdout
        # Replaying what is still broken dead-letters it again (the whole 2 MB read back from the raw topic).
        again = pipe.cli("dlq", "replay", "--all", "--error-type", "PayloadTooLarge")
        assert again.returncode == 0, again.stderr
        await pipe.wait_stored(N + len(fixed), within=60)
        total = len(poison_kind) + len(fixed) + KINDS["2mb"]

        async def re_dead_lettered() -> bool:
            return await end_offsets_total(kafka.bootstrap, settings.topic_dlq) >= total

        await wait_for(re_dead_lettered, within=60, what="the replayed 2 MB payloads back in the DLQ")
        letters = await read_dead_letters(settings)
        assert len(letters) == total
        assert sum(d.error_type == "PayloadTooLarge" for d in letters) == 2 * KINDS["2mb"]
        expected = expected_departments(
            mentions[:N] + [MentionIngested.model_validate_json(m.value).mention for m in fixed], settings
        )
        outcome = await pipe.outcome("poison messages interleaved", expected)
        outcome.notes.update(poison=len(poison_kind), replayed_after_fix=len(fixed))
    finally:
        codes = await pipe.close()
    outcome.assert_delivered()
    assert outcome.dead_lettered == total
    assert codes == dict.fromkeys(codes, 0), codes
