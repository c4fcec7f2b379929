"""Router: `mentions.classified` → rules → PostgreSQL (one transaction per batch) → department topics.

Offsets are committed by the stage only after the database commit and the acknowledged publishes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.bus import Bus, Record
from shared.bus.codec import decode, encode
from shared.db import AssignmentRow, MentionRow, MentionTopicRow, insert_ignore
from shared.events import MentionClassified, MentionRouted, utcnow
from shared.routing import Decision, RuleSet
from shared.settings import DEPARTMENTS, Settings
from shared.stage import BatchResult, Stage

_CE_SOURCE = "/mention-router/router"


class RouterService:
    def __init__(
        self,
        *,
        settings: Settings,
        bus: Bus,
        sessions: async_sessionmaker[AsyncSession],
        rules: RuleSet,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._settings = settings
        self._bus = bus
        self._sessions = sessions
        self.rules = rules
        self._clock = clock
        self.stage = Stage(
            name="router",
            bus=bus,
            consumer=bus.consumer([settings.topic_classified], group_id=settings.group("router")),
            handler=self.handle,
            dlq_topic=settings.topic_dlq,
            max_records=settings.consumer_max_records,
            max_attempts=settings.max_attempts,
        )

    async def handle(self, records: Sequence[Record]) -> BatchResult:
        result = BatchResult()
        decided: dict[str, tuple[MentionClassified, Decision]] = {}
        for record in records:
            try:
                event = decode(record, MentionClassified)
                decided[event.mention.id] = (event, self.rules.evaluate(event.mention, event.classification))
            except Exception as exc:  # noqa: BLE001 - a record that cannot be routed is dead-lettered
                result.dead.append((record, exc))
        if not decided:
            return result
        now = self._clock()
        await self._store(decided, now)
        for event, decision in decided.values():
            if event.mention.near_duplicate_of is not None:
                continue  # stored, linked to its original, and not routed a second time
            departments = decision.departments
            for assignment in decision.assignments:
                routed = MentionRouted(
                    mention=event.mention,
                    classification=event.classification,
                    department=assignment.department,
                    assignment=assignment,
                    all_departments=departments,
                    ingested_at=event.ingested_at,
                    routed_at=now,
                )
                result.out.append(
                    encode(
                        topic=self._settings.topic_routed(assignment.department.value),
                        key=event.mention.id,
                        event=routed,
                        source=_CE_SOURCE,
                        event_id=f"{event.mention.id}:{assignment.department.value}",
                    )
                )
        return result

    async def _store(self, decided: dict[str, tuple[MentionClassified, Decision]], now: datetime) -> None:
        mentions: list[dict[str, Any]] = []
        topics: list[dict[str, Any]] = []
        assignments: list[dict[str, Any]] = []
        for mention_id, (event, decision) in decided.items():
            m, c = event.mention, event.classification
            mentions.append(
                {
                    "id": mention_id,
                    "source_id": m.source_id,
                    "source_name": m.source_name,
                    "kind": m.kind.value,
                    "url": m.url,
                    "title": m.title,
                    "text": m.text,
                    "author": m.author,
                    "author_url": m.author_url,
                    "content_hash": m.content_hash,
                    "duplicate_of": m.near_duplicate_of,
                    "published_at": m.published_at,
                    "in_reply_to": m.in_reply_to,
                    "ingested_at": event.ingested_at,
                    "classified_at": event.classified_at,
                    "routed_at": now,
                    "sentiment": c.sentiment.value,
                    "sentiment_score": c.sentiment_score,
                    "language": c.language,
                    "topics": [t.name for t in c.topics],
                    "classification": c.model_dump(mode="json"),
                }
            )
            topics.extend({"mention_id": mention_id, "topic": t.name} for t in c.topics)
            if m.near_duplicate_of is not None:
                continue
            assignments.extend(
                {
                    "mention_id": mention_id,
                    "department": a.department.value,
                    "priority": a.priority.value,
                    "status": "new",
                    "sla_due_at": now + timedelta(minutes=a.sla_minutes),
                    "assignee": None,
                    "rules": list(a.rules),
                    "created_at": now,
                    "updated_at": now,
                }
                for a in decision.assignments
            )
        # One transaction per batch; replays and duplicates change nothing (ON CONFLICT DO NOTHING).
        async with self._sessions() as session, session.begin():
            await insert_ignore(session, MentionRow, mentions, keys=["id"])
            await insert_ignore(
                session,
                MentionTopicRow,
                topics,
                keys=["mention_id", "topic"],
            )
            await insert_ignore(
                session,
                AssignmentRow,
                assignments,
                keys=["mention_id", "department"],
            )

    async def run(self, stop: asyncio.Event) -> None:
        await self._bus.ensure_topics(
            [
                self._settings.topic_classified,
                self._settings.topic_dlq,
                *(self._settings.topic_routed(d) for d in DEPARTMENTS),
            ]
        )
        await self.stage.run(stop)
