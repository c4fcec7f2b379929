"""The router serialises a mention once for all its departments; what it publishes must be exactly the
MentionRouted event the model describes, with the same CloudEvents headers `encode` gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from devsupport.factories import TEMPLATES, classified_event
from services.router.service import RouterService
from shared.bus import MemoryBus, Record
from shared.bus.codec import encode
from shared.events import MentionRouted
from shared.routing import RuleSet
from shared.settings import BusKind, Settings

NOW = datetime(2026, 11, 26, 10, 30, 15, 123456, tzinfo=UTC)


class _NoStore(RouterService):
    async def _store(self, *args: object, **kwargs: object) -> None:  # the events only, no database here
        return None


async def test_published_events_are_the_models_events() -> None:
    settings = Settings().model_copy(update={"bus": BusKind.MEMORY, "database_url": "sqlite+aiosqlite://"})
    rules = RuleSet.from_file(settings.routing_file)
    router = _NoStore(settings=settings, bus=MemoryBus(), sessions=None, rules=rules, clock=lambda: NOW)  # type: ignore[arg-type]
    events = [classified_event(i, influence=1 + i % 3) for i in range(len(TEMPLATES) * 3)]
    messages = [encode(topic="t", key=e.mention.id, event=e, source="/t") for e in events]
    result = await router.handle(
        [Record(topic="t", partition=0, offset=n, key=m.key, value=m.value) for n, m in enumerate(messages)]
    )
    assert not result.dead
    expected = []
    for event in events:
        decision = rules.evaluate(event.mention, event.classification)
        for a in decision.assignments:
            model = MentionRouted(
                mention=event.mention,
                classification=event.classification,
                department=a.department,
                assignment=a,
                all_departments=decision.departments,
                ingested_at=event.ingested_at,
                routed_at=NOW,
                matched_rules=list(decision.matched_rules),
                rules_version=int(rules.version),
                tags=list(decision.tags),
                sla_due_at=NOW + timedelta(minutes=a.sla_minutes),
            )
            expected.append(
                encode(
                    topic=settings.topic_routed(a.department.value),
                    key=event.mention.id,
                    event=model,
                    source="/mention-router/router",
                    event_id=f"{event.mention.id}:{a.department.value}",
                )
            )
    assert len(result.out) == len(expected) > len(events)
    for got, want in zip(result.out, expected, strict=True):
        assert (got.topic, got.key) == (want.topic, want.key)
        # The same JSON document (key order aside) and the same event once parsed.
        assert orjson.loads(got.value) == orjson.loads(want.value)
        assert MentionRouted.model_validate_json(got.value) == MentionRouted.model_validate_json(want.value)
        assert {k: v for k, v in got.headers.items() if k != "ce_time"} == {
            k: v for k, v in want.headers.items() if k != "ce_time"
        }
        assert datetime.fromisoformat(got.headers["ce_time"]) == datetime.fromisoformat(
            want.headers["ce_time"]
        )
