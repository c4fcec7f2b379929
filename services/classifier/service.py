"""Classifier: `mentions.raw` → labels → `mentions.classified`, committing after the publish is acked."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from shared.bus import Bus, Record
from shared.bus.codec import decode, encode
from shared.classify import Engine
from shared.classify.reload import TaxonomyFile
from shared.events import MentionClassified, MentionIngested
from shared.settings import Settings
from shared.stage import BatchResult, Stage

_CE_SOURCE = "/mention-router/classifier"


class ClassifierService:
    def __init__(
        self, *, settings: Settings, bus: Bus, engine: Engine, taxonomy: TaxonomyFile | None = None
    ) -> None:
        self._settings = settings
        self._bus = bus
        self.engine = engine
        # Checked between batches (one stat): an edited taxonomy applies from the next batch on.
        self.taxonomy = taxonomy
        self.stage = Stage(
            name="classifier",
            bus=bus,
            consumer=bus.consumer([settings.topic_raw], group_id=settings.group("classifier")),
            handler=self.handle,
            dlq_topic=settings.topic_dlq,
            max_records=settings.consumer_max_records,
            max_attempts=settings.max_attempts,
            transactional_group=settings.group("classifier") if settings.exactly_once else None,
        )

    async def handle(self, records: Sequence[Record]) -> BatchResult:
        if self.taxonomy is not None and self.taxonomy.refresh():
            self.engine.use_taxonomy(self.taxonomy.taxonomy)
        result = BatchResult()
        topic = self._settings.topic_classified
        events: list[tuple[Record, MentionIngested]] = []
        for record in records:
            try:
                events.append((record, decode(record, MentionIngested)))
            except Exception as exc:  # noqa: BLE001 - a record that cannot be decoded is dead-lettered
                result.dead.append((record, exc))
        try:
            # One call for the batch: the model's encoder runs on batches of similar length.
            classifications = self.engine.classify_many([e.mention for _, e in events])
        except Exception:  # noqa: BLE001 - find the mention that fails: one at a time
            classifications = []
            for record, event in list(events):
                try:
                    classifications.append(self.engine.classify(event.mention))
                except Exception as exc:  # noqa: BLE001 - a record that cannot be classified is dead-lettered
                    result.dead.append((record, exc))
                    events.remove((record, event))
        for (_, event), classification in zip(events, classifications, strict=True):
            out = MentionClassified(
                mention=event.mention, ingested_at=event.ingested_at, classification=classification
            )
            result.out.append(encode(topic=topic, key=event.mention.id, event=out, source=_CE_SOURCE))
        return result

    async def run(self, stop: asyncio.Event) -> None:
        await self._bus.ensure_topics(
            [self._settings.topic_raw, self._settings.topic_classified, self._settings.topic_dlq]
        )
        await self.stage.run(stop)
