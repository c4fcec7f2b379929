"""The fan-out: routed mentions, read from the department topics, become one delivery per subscribed
endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.api.deps import BusHolder
from services.api.webhook_worker.deliveries import any_enabled_endpoint, delivery_row, enabled_endpoints
from services.api.webhook_worker.loops import backoff, log_failure, wait
from services.api.webhook_worker.metrics import QUEUED
from shared.bus.base import Record
from shared.bus.codec import CE_TYPE_PREFIX
from shared.db import WebhookDeliveryRow, insert_ignore
from shared.errors import PoisonMessage
from shared.settings import DEPARTMENTS, Settings
from shared.stage import BatchResult, Stage

log = logging.getLogger(__name__)

STAGE = "webhooks"
# How often a process without the fan-out running checks whether some endpoint exists now.
ENDPOINT_CHECK_S = 5.0
_CE_TYPE = re.compile(r"^" + re.escape(CE_TYPE_PREFIX) + r"(?P<type>[a-z0-9_.-]+)\.v\d+$")


def event_type_of(record: Record) -> str:
    """`mention.routed` or `mention.escalated`, from the CloudEvents type header (else the JSON's `type`)."""
    match = _CE_TYPE.match(record.headers.get("ce_type", ""))
    if match is not None:
        return match["type"]
    try:
        value = orjson.loads(record.value)
    except orjson.JSONDecodeError:
        value = None
    if isinstance(value, dict) and isinstance(value.get("type"), str):
        return str(value["type"])
    raise PoisonMessage(
        f"{record.topic}[{record.partition}]@{record.offset}: no ce_type header and no `type` in the value"
    )


class FanOut:
    """The stage's handler (`handle`) and the loop that runs its consumer (`run`). `queued` is set when
    deliveries were created (the sender looks at once); set `endpoint_added` to join the group now."""

    def __init__(
        self,
        settings: Settings,
        *,
        sessions: async_sessionmaker[AsyncSession],
        bus: BusHolder,
        clock: Callable[[], datetime],
        queued: asyncio.Event,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._bus = bus
        self._clock = clock
        self._queued = queued
        self._departments = {settings.topic_routed(d): d for d in DEPARTMENTS}
        self.endpoint_added = asyncio.Event()

    async def handle(self, records: Sequence[Record]) -> BatchResult:
        """One delivery per (record, subscribed endpoint), in one transaction."""
        result = BatchResult()
        items: list[tuple[Record, str, str]] = []
        for record in records:
            department = self._departments.get(record.topic)
            if department is None:
                continue
            try:
                items.append((record, department, event_type_of(record)))
            except PoisonMessage as exc:
                result.dead.append((record, exc))
        if not items:
            return result
        now = self._clock()
        rows: list[dict[str, Any]] = []
        async with self._sessions() as session, session.begin():
            by_department = await enabled_endpoints(session, [d for _, d, _ in items])
            for record, department, event_type in items:
                event_id = record.headers.get("ce_id") or f"{record.topic}:{record.partition}:{record.offset}"
                for endpoint_id, event_types, created_ms in by_department.get(department, ()):
                    if event_type not in event_types:
                        continue
                    if record.timestamp_ms and record.timestamp_ms < created_ms:
                        continue  # published before the endpoint existed
                    rows.append(
                        delivery_row(endpoint_id, event_id, event_type, record.key, record.value, now)
                    )
            await insert_ignore(session, WebhookDeliveryRow, rows, keys=["endpoint_id", "event_id"])
        if rows:
            QUEUED.inc(len(rows))
            self._queued.set()
        return result

    async def _any_endpoint(self) -> bool:
        async with self._sessions() as session:
            return await any_enabled_endpoint(session)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume the department topics once some endpoint is enabled, until `stop`; start over after a
        failure (the API keeps serving meanwhile)."""
        topics = list(self._departments)
        failures = 0
        while not stop.is_set():
            consumer = None
            try:
                self.endpoint_added.clear()
                if not await self._any_endpoint():
                    await wait(stop, self.endpoint_added, ENDPOINT_CHECK_S)
                    continue
                bus = await self._bus.get()
                await bus.ensure_topics(topics)
                consumer = bus.consumer(topics, group_id=self._settings.group(STAGE))
                stage = Stage(
                    name=STAGE,
                    bus=bus,
                    consumer=consumer,
                    handler=self.handle,
                    dlq_topic=self._settings.topic_dlq,
                    max_records=self._settings.consumer_max_records,
                    max_attempts=self._settings.max_attempts,
                )
                log.info("webhooks: fanning out %s", ", ".join(topics))
                await stage.run(stop)
            except Exception as exc:  # noqa: BLE001 - the API keeps serving; the fan-out starts over
                failures += 1
                delay = backoff(failures)
                log_failure("the webhook fan-out", exc, delay)
                if consumer is not None:
                    with contextlib.suppress(Exception):
                        await consumer.stop()
                await wait(stop, None, delay)
