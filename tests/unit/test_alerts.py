"""The spike rule (shared/alerts.py): baselines from hourly counts and the threshold, edge cases first."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest

from shared.alerts import Baseline, SpikeRule, day_floor, hour_floor
from shared.settings import Settings

RULE = SpikeRule(min_count=5, ratio=3.0, stddevs=3.0, min_history_hours=24)


def test_no_history_never_alerts() -> None:
    empty = Baseline.of([])
    assert empty == Baseline(hours=0, mean=0.0, stddev=0.0)
    assert not RULE.is_spike(1000, empty)
    # Less history than asked for: still no baseline to judge by.
    assert not RULE.is_spike(1000, Baseline.of([0] * 23))
    # Unless the operator asks for none.
    eager = SpikeRule(min_count=5, min_history_hours=0)
    assert eager.is_spike(5, empty) and not eager.is_spike(4, empty)


def test_zero_baseline_needs_the_minimum_count() -> None:
    quiet = Baseline.of([0] * 168)
    assert (quiet.mean, quiet.stddev) == (0.0, 0.0)
    assert RULE.threshold(quiet) == 5.0
    assert not RULE.is_spike(4, quiet)
    assert RULE.is_spike(5, quiet)


def test_flat_history_alerts_at_the_ratio() -> None:
    flat = Baseline.of([4] * 24)
    assert (flat.mean, flat.stddev) == (4.0, 0.0)
    assert RULE.threshold(flat) == 12.0
    assert not RULE.is_spike(11, flat)
    assert RULE.is_spike(12, flat)


def test_a_noisy_history_needs_more_than_its_ordinary_peaks() -> None:
    # Hours alternating 0 and 10: mean 5, stddev 5 -> mean + 3 sd = 20 beats mean x 3 = 15.
    noisy = Baseline.of([0, 10] * 12)
    assert (noisy.mean, noisy.stddev) == (5.0, 5.0)
    assert RULE.threshold(noisy) == 20.0
    assert not RULE.is_spike(19, noisy) and RULE.is_spike(20, noisy)


def test_sparse_counts_pad_the_missing_hours_with_zeros() -> None:
    sparse = Baseline.of([6, 6], hours=24)
    assert sparse == Baseline.from_sums(24, 12, 72)
    assert sparse.mean == 0.5
    assert math.isclose(sparse.stddev, math.sqrt(72 / 24 - 0.25))
    with pytest.raises(ValueError, match="do not fit"):
        Baseline.of([1, 2, 3], hours=2)
    assert Baseline.from_sums(0, 0, 0) == Baseline(hours=0)


def test_rounding_never_makes_a_negative_variance() -> None:
    b = Baseline.of([3] * 168)
    assert b.stddev == 0.0 and b.mean == 3.0


def test_the_rule_comes_from_the_settings() -> None:
    settings = Settings().model_copy(
        update={"alert_min_count": 7, "alert_ratio": 2.5, "alert_stddevs": 2.0, "alert_min_history_hours": 6}
    )
    assert SpikeRule.from_settings(settings) == SpikeRule(
        min_count=7, ratio=2.5, stddevs=2.0, min_history_hours=6
    )
    defaults = SpikeRule.from_settings(Settings())
    assert (defaults.min_count, defaults.ratio, defaults.min_history_hours) == (5, 3.0, 24)


def test_windows_are_utc_clock_hours_and_days() -> None:
    cet = timezone(timedelta(hours=1))
    when = datetime(2026, 11, 26, 0, 42, 17, 5, tzinfo=cet)  # 23:42 UTC the day before
    assert hour_floor(when) == datetime(2026, 11, 25, 23, 0, tzinfo=UTC)
    assert day_floor(when) == datetime(2026, 11, 25, tzinfo=UTC)
