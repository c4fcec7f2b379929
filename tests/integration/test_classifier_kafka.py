"""The classifier on a real broker: every readable mention is labelled and published, every unreadable
one is dead-lettered with its reason, and offsets are committed only after the output is acknowledged."""

from __future__ import annotations

import asyncio

import pytest

from devsupport.factories import classified_event
from devsupport.kafka import group_lag, read_topics
from devsupport.scenario import wait_for
from services.classifier.bootstrap import build
from shared.bus.base import OutMessage, Record
from shared.bus.codec import decode, encode
from shared.bus.kafka import KafkaBus
from shared.events import MentionClassified, MentionIngested
from shared.settings import ClassifierEngineKind
from tests.conftest import KafkaEnv

pytestmark = pytest.mark.kafka


@pytest.mark.parametrize("engine", [ClassifierEngineKind.RULES, ClassifierEngineKind.CASCADE])
async def test_classifies_and_dead_letters(kafka: KafkaEnv, engine: ClassifierEngineKind) -> None:
    settings = kafka.settings().model_copy(update={"classifier_engine": engine})
    bus = KafkaBus(settings)
    await bus.start()
    stop = asyncio.Event()
    try:
        await bus.ensure_topics(settings.all_topics())
        mentions = [classified_event(i).mention for i in range(20)]
        good = [
            encode(topic=settings.topic_raw, key=m.id, event=MentionIngested(mention=m), source="/t")
            for m in mentions
        ]
        poison = [
            OutMessage(topic=settings.topic_raw, key="garbage", value=b"\x00\xff\xfe binary"),
            OutMessage(topic=settings.topic_raw, key="missing-field", value=b'{"mention": {"id": "x"}}'),
        ]
        await bus.send(good[:10] + poison + good[10:])
        task = asyncio.create_task(build(settings, bus=bus).run(stop))

        async def consumed() -> bool:
            return (
                await group_lag(
                    settings.kafka_bootstrap_servers, settings.group("classifier"), settings.topic_raw
                )
                == 0
            )

        await wait_for(consumed, within=60, what="the classifier to commit everything")
        stop.set()
        await asyncio.wait_for(task, 30)
    finally:
        stop.set()
        await bus.stop()

    out = await read_topics(settings.kafka_bootstrap_servers, [settings.topic_classified])
    events = [
        decode(
            Record(topic=r.topic, partition=r.partition, offset=r.offset, key=r.key.decode(), value=r.value),
            MentionClassified,
        )
        for r in out
    ]
    assert {e.mention.id for e in events} == {m.id for m in mentions}
    assert all(
        e.classification.engine == engine.value and e.classification.sentiment_evidence for e in events
    )
    assert {dict(r.headers)["ce_type"] for r in out} == {b"io.mentionrouter.mention.classified.v1"}
    dlq = await read_topics(settings.kafka_bootstrap_servers, [settings.topic_dlq])
    assert sorted(r.key.decode() for r in dlq) == ["garbage", "missing-field"]
    assert all(dict(r.headers)["mr_stage"] == b"classifier" for r in dlq)
