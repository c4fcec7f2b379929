"""Router: `mentions.classified` → rules → PostgreSQL → department topics.

A batch is stored in one statement (mentions, topics and assignments; a batch of more than two parts of
`_PART` mentions in one statement per part, overlapping with the work on the next part). Offsets are
committed by the stage only after every part is stored and the publishes are acknowledged.
Beside the stage, each replica runs four small loops: it picks up a newly activated rule set, escalates
assignments past their SLA, raises spike alerts (shared/alerts.py), and publishes the outbox
(escalations, reassignments, alerts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.alerts import SpikeDetector
from shared.bus import Bus, Record
from shared.bus.base import OutMessage
from shared.bus.codec import decode
from shared.db import AssignmentRow, MentionRow, MentionTopicRow
from shared.db.engine import JsonText, TableRows, insert_ignore_tables
from shared.errors import is_transient
from shared.events import MentionClassified, utcnow
from shared.mentionrows import mention_column_lists
from shared.routed import RoutedTarget, json_of, routed_messages
from shared.routing import Decision, RuleSet
from shared.rulestore import RuleHolder, seed
from shared.settings import DEPARTMENTS, Settings
from shared.stage import BatchResult, Stage
from shared.workflow import escalate_due, relay_outbox

_CE_SOURCE = "/mention-router/router"
# A batch bigger than two parts is written part by part, overlapping with the work on the next part.
_PART = 128
_YIELD_EVERY = 32
log = logging.getLogger(__name__)


class RouterService:
    def __init__(
        self,
        *,
        settings: Settings,
        bus: Bus,
        sessions: async_sessionmaker[AsyncSession],
        rules: RuleSet | None = None,
        known_topics: Iterable[str] | None = None,
        clock: Callable[[], datetime] = utcnow,
        outbox_interval_s: float = 1.0,
    ) -> None:
        """`rules`: the rule set to start with (else the database's active one, seeded from
        `settings.routing_file`, once `run` starts); `known_topics` validates rule sets read later."""
        self._settings = settings
        self._bus = bus
        self._sessions = sessions
        self.holder = RuleHolder(sessions, known_topics=known_topics, initial=rules)
        self._known_topics = known_topics
        self._clock = clock
        self._outbox_interval_s = outbox_interval_s
        self._spikes = SpikeDetector(settings)
        self.stage = Stage(
            name="router",
            bus=bus,
            consumer=bus.consumer([settings.topic_classified], group_id=settings.group("router")),
            handler=self.handle,
            dlq_topic=settings.topic_dlq,
            max_records=settings.consumer_max_records,
            max_attempts=settings.max_attempts,
        )

    @property
    def rules(self) -> RuleSet:
        if self.holder.rules is None:
            raise RuntimeError("no routing rules loaded yet: run() loads the active rule set")
        return self.holder.rules

    async def handle(self, records: Sequence[Record]) -> BatchResult:
        """Decode, evaluate and store the batch, then build its events. A large batch is written in parts
        of `_PART` mentions, each one statement, while the next part is decoded and evaluated and, for the
        last, while the events are built: the router's CPU and the database's overlap. The offsets move
        only once every part is stored (a failed part fails the batch, which the stage retries; the parts
        stored already change nothing the second time)."""
        result = BatchResult()
        decided: dict[str, _Decided] = {}
        part: dict[str, _Decided] = {}
        rules = self.rules
        now = self._clock()
        version = _version(rules)
        due = _Due(now)
        writing: asyncio.Task[None] | None = None
        try:
            for n, record in enumerate(records, start=1):
                try:
                    event = decode(record, MentionClassified)
                    if (
                        event.mention.id not in decided
                    ):  # a duplicate within the batch: stored and routed once
                        decision = rules.evaluate(event.mention, event.classification)
                        c = event.classification
                        # The labels as JSON once: stored as they are and copied into every event.
                        d = _Decided(event, decision, c.__pydantic_serializer__.to_json(c))
                        decided[event.mention.id] = part[event.mention.id] = d
                except Exception as exc:  # noqa: BLE001 - a record that cannot be routed is dead-lettered
                    result.dead.append((record, exc))
                if len(part) >= _PART and len(records) - n >= _PART:
                    writing = asyncio.create_task(self._store_after(writing, part, now, version, due))
                    part = {}
                if writing is not None and n % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # the write in flight takes its next step
            if part:
                writing = asyncio.create_task(self._store_after(writing, part, now, version, due))
            for n, d in enumerate(decided.values(), start=1):
                if d.event.mention.near_duplicate_of is None:  # a near-duplicate is stored, not routed
                    result.out.extend(self._routed(d, now, version, due))
                if n % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)
        finally:
            if writing is not None:
                await asyncio.gather(writing, return_exceptions=True)
        if writing is not None:
            writing.result()  # the batch fails if a part could not be stored
        return result

    async def _store_after(
        self,
        previous: asyncio.Task[None] | None,
        decided: dict[str, _Decided],
        now: datetime,
        version: int | None,
        due: _Due,
    ) -> None:
        """`_store` once the part before is stored (one at a time: they share the batch's order)."""
        if previous is not None:
            await previous
        await self._store(decided, now, version, due)

    def _routed(self, d: _Decided, now: datetime, version: int | None, due: _Due) -> list[OutMessage]:
        """The MentionRouted events of one mention, one per department (shared.routed builds them: the
        mention and its labels are serialised once and shared by every department's event)."""
        event, decision = d.event, d.decision
        mention_id = event.mention.id
        return routed_messages(
            self._settings,
            source=_CE_SOURCE,
            mention=json_of(event.mention),
            mention_id=mention_id,
            classification=orjson.Fragment(d.classification),
            all_departments=[a.department.value for a in decision.assignments],
            ingested_at=event.ingested_at,
            routed_at=now,
            matched_rules=decision.matched_rules,
            rules_version=version,
            tags=decision.tags,
            targets=[
                RoutedTarget(
                    department=a.department.value,
                    priority=a.priority.value,
                    sla_minutes=a.sla_minutes,
                    rules=a.rules,
                    sla_due_at=due(a.sla_minutes),
                    event_id=f"{mention_id}:{a.department.value}",
                )
                for a in decision.assignments
            ],
        )

    async def _store(
        self, decided: dict[str, _Decided], now: datetime, version: int | None, due: _Due
    ) -> None:
        """The batch's mentions, their topics and their assignments, column by column, in one statement
        on PostgreSQL (one transaction on SQLite); replays and duplicates change nothing (ON CONFLICT DO
        NOTHING)."""
        batch = list(decided.values())
        events = [d.event for d in batch]
        labels = [e.classification for e in events]
        mentions = mention_column_lists([e.mention for e in events])
        mentions.update(
            ingested_at=[e.ingested_at for e in events],
            classified_at=[e.classified_at for e in events],
            sentiment=[c.sentiment.value for c in labels],
            sentiment_score=[c.sentiment_score for c in labels],
            language=[c.language for c in labels],
            topics=[[t.name for t in c.topics] for c in labels],
            classification=[JsonText(d.classification.decode()) for d in batch],
            intent=[c.intent.value for c in labels],
            urgency=[c.urgency for c in labels],
            matched_rules=[d.decision.matched_rules for d in batch],
            tags=[d.decision.tags for d in batch],
        )
        topic_ids: list[str] = []
        topic_names: list[str] = []
        ids: list[str] = []
        departments: list[str] = []
        priorities: list[str] = []
        sla_due: list[datetime] = []
        sla_minutes: list[int] = []
        routed_by: list[Sequence[str]] = []
        tags: list[Sequence[str]] = []
        for mention_id, d in decided.items():
            for t in d.event.classification.topics:
                topic_ids.append(mention_id)
                topic_names.append(t.name)
            if d.event.mention.near_duplicate_of is not None:
                continue
            for a in d.decision.assignments:
                ids.append(mention_id)
                departments.append(a.department.value)
                priorities.append(a.priority.value)
                sla_due.append(due(a.sla_minutes))
                sla_minutes.append(a.sla_minutes)
                routed_by.append(a.rules)
                tags.append(d.decision.tags)
        assignments: dict[str, list[Any]] = {
            "mention_id": ids,
            "department": departments,
            "priority": priorities,
            "sla_due_at": sla_due,
            "sla_minutes": sla_minutes,
            "next_escalation_at": sla_due,
            "rules": routed_by,
            "tags": tags,
        }
        new_assignment = {
            "status": "new",
            "escalation_level": 0,
            "assignee": None,
            "created_at": now,
            "updated_at": now,
            "routed_at": now,
            "version": 1,
        }
        await insert_ignore_tables(
            self._sessions,
            [
                TableRows(
                    MentionRow, mentions, ("id",), constants={"routed_at": now, "rules_version": version}
                ),
                TableRows(
                    MentionTopicRow, {"mention_id": topic_ids, "topic": topic_names}, ("mention_id", "topic")
                ),
                TableRows(AssignmentRow, assignments, ("mention_id", "department"), constants=new_assignment),
            ],
        )

    async def load_rules(self) -> int:
        """Seed the database from the YAML file if it has no rule set, and load the active one."""
        await seed(self._sessions, self._settings.routing_file, known_topics=self._known_topics)
        await self.holder.refresh()
        assert self.holder.version is not None
        return self.holder.version

    async def escalate(self) -> int:
        """Escalate the assignments past their SLA now; the events go out with the next outbox relay."""
        async with self._sessions() as session, session.begin():
            events = await escalate_due(session, now=self._clock(), settings=self._settings)
        if events:
            log.info("escalated %d overdue assignment(s)", len(events))
        return len(events)

    async def detect_spikes(self) -> int:
        """Raise an alert for each topic spiking this hour; the events go out with the next outbox relay."""
        async with self._sessions() as session, session.begin():
            alerts = await self._spikes.detect(session, now=self._clock())
        for a in alerts:
            log.warning("spike: %d %s mention(s) since %s", a.count, a.topic, a.window_start)
        return len(alerts)

    async def relay(self) -> int:
        return await relay_outbox(self._sessions, self._bus)

    async def run(self, stop: asyncio.Event) -> None:
        await self._bus.ensure_topics(
            [
                self._settings.topic_classified,
                self._settings.topic_dlq,
                self._settings.topic_escalations,
                self._settings.topic_alerts,
                *(self._settings.topic_routed(d) for d in DEPARTMENTS),
            ]
        )
        await _retrying(self.load_rules, stop, what="load the routing rules")
        loops = [
            asyncio.create_task(
                _every(self._settings.router_rules_refresh_s, self.holder.refresh, stop, "rules refresh")
            ),
            asyncio.create_task(
                _every(self._settings.router_escalation_interval_s, self.escalate, stop, "SLA escalation")
            ),
            asyncio.create_task(
                _every(self._settings.alert_interval_s, self.detect_spikes, stop, "spike detection")
            ),
            asyncio.create_task(_every(self._outbox_interval_s, self.relay, stop, "outbox relay")),
        ]
        try:
            await self.stage.run(stop)
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)


@dataclass(frozen=True, slots=True)
class _Decided:
    event: MentionClassified
    decision: Decision
    classification: bytes  # the labels as JSON, stored and published as they are


class _Due:
    """When an SLA of so many minutes from `now` runs out: one datetime per SLA length in a batch."""

    __slots__ = ("_at", "_now")

    def __init__(self, now: datetime) -> None:
        self._now = now
        self._at: dict[int, datetime] = {}

    def __call__(self, minutes: int) -> datetime:
        at = self._at.get(minutes)
        if at is None:
            at = self._at[minutes] = self._now + timedelta(minutes=minutes)
        return at


def _version(rules: RuleSet) -> int | None:
    try:
        return int(rules.version)
    except (TypeError, ValueError):
        return None


async def _retrying(step: Callable[[], Awaitable[Any]], stop: asyncio.Event, *, what: str) -> None:
    """Run `step` until it succeeds, waiting out transient failures (the database starting up)."""
    delay = 0.5
    while not stop.is_set():
        try:
            await step()
            return
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("cannot %s yet (%s: %s); retrying in %.1fs", what, type(exc).__name__, exc, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 5.0)


async def _every(
    interval_s: float, step: Callable[[], Awaitable[Any]], stop: asyncio.Event, what: str
) -> None:
    """Run `step` every `interval_s` until `stop`; a failure is logged and the loop goes on."""
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), interval_s)
            return
        except TimeoutError:
            pass
        try:
            await step()
        except Exception as exc:  # noqa: BLE001 - the next round tries again; the stage keeps routing
            log.warning(
                "%s failed (%s: %s); trying again in %.1fs", what, type(exc).__name__, exc, interval_s
            )
