"""What an attempt's outcome makes of its delivery: delivered, dead, or tried again after the schedule."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.api.webhook_worker.sender import Outcome
from shared.settings import Settings


def retry_delay(attempt: int, schedule: Sequence[float], *, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): the schedule's entry for it (its last
    entry for later attempts) with ±20 % jitter, so that retries after an endpoint's outage spread out."""
    base = schedule[min(max(attempt, 1), len(schedule)) - 1]
    return base * (rng or random).uniform(0.8, 1.2)


@dataclass(frozen=True)
class Verdict:
    """The delivery's new status, the `mr_webhook_deliveries_total` outcome it counts as, and when it goes
    again (None: never)."""

    status: str
    metric: str
    next_attempt_at: datetime | None = None


def judge(outcome: Outcome, *, attempt: int, retry: bool, settings: Settings, now: datetime) -> Verdict:
    """2xx delivered; 410 dead (the endpoint is disabled); else dead after the last attempt (or at once
    without `retry`), else retrying after the schedule's delay, or after the endpoint's Retry-After where
    that is longer (bounded by the schedule's longest delay)."""
    if outcome.ok:
        return Verdict("delivered", "delivered")
    if outcome.gone:
        return Verdict("dead", "gone")
    if not retry or attempt >= settings.webhook_max_attempts:
        return Verdict("dead", "dead")
    schedule = settings.webhook_retry_schedule_s
    delay = retry_delay(attempt, schedule)
    if outcome.retry_after_s is not None:
        delay = max(delay, min(outcome.retry_after_s, max(schedule)))
    return Verdict("retrying", "failed", now + timedelta(seconds=delay))
