"""Spike alerts: each topic's mentions in the current clock hour against its trailing hourly baseline.

The window is the current clock hour [H, H+1h) in UTC, not a sliding 60 minutes: an alert is one topic in
one hour (unique (kind, topic, window_start)), raised as soon as the hour so far reaches the threshold, and
its count is brought up to date by later runs in the same hour. A sliding window would name a new window
on every run and so repeat the alert of one burst; the price of clock hours is that a burst across the
turn of an hour is judged as two halves.

The baseline is the topic's mentions per hour over the `alert_baseline_hours` hours before H (an hour
without mentions counts as 0), cut short at the first mention the database holds: a fresh install does
not count the time before it existed as quiet hours. With fewer than `alert_min_history_hours` of history
there is no baseline and no alert. Then

    spike  ⇔  count ≥ max(alert_min_count, mean * alert_ratio, mean + alert_stddevs * stddev)

`min_count` keeps a quiet topic's first few mentions from alerting (a zero baseline makes any ratio
infinite), `ratio` asks for a multiple of the usual volume, and the stddev term keeps a topic whose
volume swings widely from alerting on its ordinary peaks.

A mention counts for every topic it has, near-duplicates included: the same as `GET /v1/stats/mentions`
grouped by topic shows an all-departments key for that hour.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy import ColumnElement, func, literal_column, select, type_coerce, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute

from shared.bus.codec import encode
from shared.classify.reload import TaxonomyFile
from shared.db import AlertRow, MentionRow, MentionTopicRow
from shared.db.models import UtcDateTime
from shared.events import Department, MentionAlert
from shared.settings import Settings
from shared.workflow import add_to_outbox

log = logging.getLogger(__name__)

CE_SOURCE = "/mention-router/alerts"
HOUR = timedelta(hours=1)
SPIKE = "spike"


# ---------------------------------------------------------------------------------------------- the rule


@dataclass(frozen=True)
class Baseline:
    """A topic's hourly counts over `hours` hours: their mean and (population) standard deviation."""

    hours: int
    mean: float = 0.0
    stddev: float = 0.0

    @classmethod
    def of(cls, hourly: Iterable[int], *, hours: int | None = None) -> Baseline:
        """From hourly counts; `hours` longer than the counts given makes the missing hours zeros."""
        counts = list(hourly)
        n = len(counts) if hours is None else hours
        if n < len(counts):
            raise ValueError(f"{len(counts)} hourly counts do not fit in {n} hours")
        return cls.from_sums(n, sum(counts), sum(c * c for c in counts))

    @classmethod
    def from_sums(cls, hours: int, total: float, total_sq: float) -> Baseline:
        if hours <= 0:
            return cls(hours=0)
        mean = total / hours
        # max(): rounding can take the variance of equal counts a hair below zero.
        return cls(hours=hours, mean=mean, stddev=math.sqrt(max(0.0, total_sq / hours - mean * mean)))


@dataclass(frozen=True)
class SpikeRule:
    min_count: int = 5
    ratio: float = 3.0
    stddevs: float = 3.0
    min_history_hours: int = 24

    @classmethod
    def from_settings(cls, settings: Settings) -> SpikeRule:
        return cls(
            min_count=settings.alert_min_count,
            ratio=settings.alert_ratio,
            stddevs=settings.alert_stddevs,
            min_history_hours=settings.alert_min_history_hours,
        )

    def threshold(self, baseline: Baseline) -> float:
        """The count at which an hour is a spike against `baseline`."""
        return max(
            float(self.min_count),
            baseline.mean * self.ratio,
            baseline.mean + self.stddevs * baseline.stddev,
        )

    def is_spike(self, count: int, baseline: Baseline) -> bool:
        """`count` mentions in an hour is a spike; never without `min_history_hours` of history."""
        return baseline.hours >= self.min_history_hours and count >= self.threshold(baseline)


def hour_floor(when: datetime) -> datetime:
    """The start of `when`'s clock hour, in UTC."""
    return when.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def day_floor(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def time_bucket(
    dialect: str, column: QueryableAttribute[datetime], unit: Literal["hour", "day"]
) -> ColumnElement[datetime]:
    """The start of the UTC hour or day of a timestamp column, computed by the database: `date_trunc` on
    PostgreSQL (of the time in UTC, whatever the session's time zone), `strftime` on SQLite (which stores
    UTC times as text). The constants are literals so that the same expression in SELECT and GROUP BY is
    the same SQL (bound parameters would make them differ on PostgreSQL)."""
    if dialect == "postgresql":
        utc = func.timezone(literal_column("'UTC'"), column)
        expr: ColumnElement[datetime] = func.date_trunc(literal_column(f"'{unit}'"), utc)
    elif dialect == "sqlite":
        pattern = "%Y-%m-%d %H:00:00" if unit == "hour" else "%Y-%m-%d 00:00:00"
        expr = func.strftime(literal_column(f"'{pattern}'"), column)
    else:
        raise NotImplementedError(f"time buckets on {dialect}")
    return type_coerce(expr, UtcDateTime())


# ----------------------------------------------------------------------------------- detection in the DB


@dataclass(frozen=True)
class History:
    """Every topic's baseline before one window (topics without mentions in it: all zeros)."""

    window_start: datetime
    hours: int
    topics: Mapping[str, Baseline] = field(default_factory=dict)

    def of(self, topic: str) -> Baseline:
        return self.topics.get(topic) or Baseline(hours=self.hours)


async def history(session: AsyncSession, *, window_start: datetime, baseline_hours: int) -> History:
    """Each topic's hourly counts over the `baseline_hours` before `window_start`, as baselines; fewer
    hours when the first mention stored is more recent than that."""
    first = await session.scalar(select(func.min(MentionRow.routed_at)))
    if first is None or hour_floor(first) >= window_start:
        return History(window_start=window_start, hours=0)
    hours = min(baseline_hours, int((window_start - hour_floor(first)) / HOUR))
    start = window_start - hours * HOUR
    bucket = time_bucket(session.get_bind().dialect.name, MentionRow.routed_at, "hour")
    rows = await session.execute(
        select(MentionTopicRow.topic, bucket, func.count())
        .select_from(MentionTopicRow)
        .join(MentionRow, MentionRow.id == MentionTopicRow.mention_id)
        .where(MentionRow.routed_at >= start, MentionRow.routed_at < window_start)
        .group_by(MentionTopicRow.topic, bucket)
    )
    sums: dict[str, list[int]] = {}
    for topic, _, n in rows:
        acc = sums.setdefault(topic, [0, 0])
        acc[0] += int(n)
        acc[1] += int(n) * int(n)
    return History(
        window_start=window_start,
        hours=hours,
        topics={t: Baseline.from_sums(hours, total, sq) for t, (total, sq) in sums.items()},
    )


async def hour_counts(session: AsyncSession, *, window_start: datetime, at_least: int = 1) -> dict[str, int]:
    """Mentions per topic routed in the hour starting at `window_start` (topics with `at_least`)."""
    rows = await session.execute(
        select(MentionTopicRow.topic, func.count())
        .select_from(MentionTopicRow)
        .join(MentionRow, MentionRow.id == MentionTopicRow.mention_id)
        .where(MentionRow.routed_at >= window_start, MentionRow.routed_at < window_start + HOUR)
        .group_by(MentionTopicRow.topic)
        .having(func.count() >= at_least)
    )
    return {topic: int(n) for topic, n in rows}


class SpikeDetector:
    """Finds the spikes of the current hour and records them. Keeps the history of the current window
    between runs (the hours before it do not change), so a run reads only the current hour."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.rule = SpikeRule.from_settings(settings)
        self._history: History | None = None
        self._taxonomy: TaxonomyFile | None = None

    def departments(self) -> Mapping[str, str]:
        """topic → its department in the taxonomy (the file is re-read when it changes)."""
        if self._taxonomy is None:
            self._taxonomy = TaxonomyFile(self.settings.taxonomy_file)
        else:
            self._taxonomy.refresh()
        return {name: t.department for name, t in self._taxonomy.taxonomy.topics.items()}

    async def detect(self, session: AsyncSession, *, now: datetime) -> list[MentionAlert]:
        """Record the current hour's spikes in the session's transaction: a new alert row with its
        `mention.alert` event in the outbox, or the count of an alert already raised this hour brought up
        to date. Returns the new alerts. Replicas running at once raise each alert once (the unique
        (kind, topic, window_start) and INSERT … ON CONFLICT DO NOTHING)."""
        window_start = hour_floor(now)
        spikes = await self._spikes(session, window_start=window_start)
        if not spikes:
            return []
        departments = self.departments()
        raised: list[MentionAlert] = []
        for topic, (count, baseline) in sorted(spikes.items()):
            alert = await self._raise(
                session,
                topic=topic,
                count=count,
                baseline=baseline,
                department=departments.get(topic),
                window_start=window_start,
                now=now,
            )
            if alert is not None:
                raised.append(alert)
        self._publish(session, raised, now=now)
        await session.flush()
        return raised

    async def _spikes(
        self, session: AsyncSession, *, window_start: datetime
    ) -> dict[str, tuple[int, Baseline]]:
        """The topics whose count in the hour from `window_start` is a spike against their baseline: both."""
        counts = await hour_counts(session, window_start=window_start, at_least=self.rule.min_count)
        if not counts:
            return {}
        if self._history is None or self._history.window_start != window_start:
            self._history = await history(
                session, window_start=window_start, baseline_hours=self.settings.alert_baseline_hours
            )
        past = self._history
        return {t: (n, past.of(t)) for t, n in counts.items() if self.rule.is_spike(n, past.of(t))}

    async def _raise(
        self,
        session: AsyncSession,
        *,
        topic: str,
        count: int,
        baseline: Baseline,
        department: str | None,
        window_start: datetime,
        now: datetime,
    ) -> MentionAlert | None:
        """Insert the topic's alert of this hour; None when it was raised already (its count updated)."""
        threshold = self.rule.threshold(baseline)
        insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
        values = {
            "kind": SPIKE,
            "topic": topic,
            "department": department,
            "window_start": window_start,
            "window_end": window_start + HOUR,
            "count": count,
            "baseline": baseline.mean,
            "stddev": baseline.stddev,
            "baseline_hours": baseline.hours,
            "threshold": threshold,
            "created_at": now,
            "updated_at": now,
        }
        alert_id = await session.scalar(
            insert(AlertRow)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["kind", "topic", "window_start"])
            .returning(AlertRow.id)
        )
        if alert_id is None:
            # Raised by an earlier run (or another replica) this hour: only the count moves on.
            await session.execute(
                update(AlertRow)
                .where(
                    AlertRow.kind == SPIKE,
                    AlertRow.topic == topic,
                    AlertRow.window_start == window_start,
                    AlertRow.count < count,
                )
                .values(count=count, updated_at=now)
            )
            return None
        return MentionAlert(
            alert_id=alert_id,
            topic=topic,
            department=Department(department) if department is not None else None,
            window_start=window_start,
            window_end=window_start + HOUR,
            count=count,
            baseline=baseline.mean,
            stddev=baseline.stddev,
            baseline_hours=baseline.hours,
            threshold=threshold,
            detected_at=now,
        )

    def _publish(self, session: AsyncSession, raised: list[MentionAlert], *, now: datetime) -> None:
        """The new alerts' `mention.alert` events, into the outbox (sent after the commit)."""
        add_to_outbox(
            session,
            [
                encode(
                    topic=self.settings.topic_alerts,
                    key=a.topic,
                    event=a,
                    source=CE_SOURCE,
                    event_id=f"{SPIKE}:{a.topic}:{a.window_start.isoformat()}",
                )
                for a in raised
            ],
            now=now,
        )
