"""The API benchmark's own logic: the open-loop schedule, the statistics, the request mix, the plan
lines and the generated workflow data (no database, no timing)."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

from bench.api_lifecycle import ESCALATION_MAX, lifecycle
from bench.api_load import due_times, summary
from bench.api_plans import key_lines
from bench.api_workload import LIST_TEMPLATES, Catalog, workload

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def test_the_schedule_is_open_loop_at_a_fixed_rate() -> None:
    due = due_times(5, 200.0, t0=10.0)
    assert due == [10.0, 10.005, 10.01, 10.015, 10.02]
    assert due_times(0, 200.0) == []


def test_summary_reports_nearest_rank_percentiles_and_errors() -> None:
    s = summary([float(v) for v in range(1, 101)], errors=2)
    assert (s["count"], s["errors"], s["p50"], s["p99"], s["max"]) == (100, 2, 50.0, 99.0, 100.0)
    assert summary([], errors=3) == {"count": 0, "errors": 3}


def _catalog() -> Catalog:
    return Catalog(
        cursors={name: [f"cursor-{name}-{i}" for i in range(9)] for name, *_ in LIST_TEMPLATES},
        deep=[(NOW - timedelta(days=d), f"m{d}") for d in range(1, 90)],
        admin_ids=[f"a{i}" for i in range(100)],
        scoped_ids=[f"s{i}" for i in range(100)],
    )


def test_the_mix_follows_its_shares_and_is_deterministic() -> None:
    mix = {"list": 0.6, "detail": 0.3, "queues": 0.1}
    requests = workload(5_000, _catalog(), classes=mix, seed=1)
    assert requests == workload(5_000, _catalog(), classes=mix, seed=1)
    shares = Counter(r.cls for r in requests)
    for cls, share in mix.items():
        assert abs(shares[cls] / 5_000 - share) < 0.03
    kinds = Counter(r.kind for r in requests if r.cls == "list")
    assert set(kinds) == {"list:first", "list:cursor", "list:deep"}
    for r in requests:
        params = dict(r.params)
        if r.kind == "list:first":
            assert "cursor" not in params
        elif r.kind == "list:cursor":
            assert params["cursor"].startswith(f"cursor-{r.template}-")
        if r.cls == "detail":
            assert r.path.startswith("/v1/mentions/" + ("s" if r.key == "scoped" else "a"))
    assert {r.key for r in requests if r.cls == "list"} == {"admin", "scoped"}


def test_a_class_alone() -> None:
    requests = workload(200, _catalog(), classes={"queues": 1.0}, seed=2)
    assert {r.path for r in requests} == {"/v1/queues"}


def test_key_lines_keep_nodes_conditions_and_times() -> None:
    plan = """Limit  (cost=0.42..10.00 rows=51 width=100) (actual time=0.01..0.2 rows=51 loops=1)
  Buffers: shared hit=60
  ->  Index Scan Backward using ix_mentions_routed_at_id on mentions  (actual rows=51 loops=1)
        Index Cond: (routed_at < '2026-11-01')
        Filter: (kind = 'post')
        Rows Removed by Filter: 12
Planning Time: 0.2 ms
Execution Time: 0.3 ms"""
    lines = key_lines(plan)
    assert not any("Buffers" in line for line in lines)
    assert len(lines) == 7


def test_assignment_lifecycles_are_consistent() -> None:
    rng = random.Random(3)
    seen: Counter[str] = Counter()
    for i in range(6_000):
        created = NOW - timedelta(hours=i * 0.35)
        life = lifecycle(rng, "support", "P3", 1440, created, NOW)
        seen[life.status] += 1
        assert life.events is not None
        assert all(created <= e[3] <= NOW for e in life.events)
        assert [e[3] for e in life.events] == sorted(e[3] for e in life.events)
        assert life.status in {
            "new",
            "acknowledged",
            "responded",
            "resolved",
            "dismissed",
            "reopened",
            "reassigned",
        }
        if life.status == "resolved":
            assert life.resolved_at is not None and life.closed_at == life.resolved_at
        if life.status in ("dismissed", "reassigned"):
            assert life.closed_at is not None and life.resolved_at is None
        if life.status == "reassigned":
            assert life.reassigned_to not in (None, "support")
        if life.first_response_at is not None:
            assert life.acknowledged_at is not None and life.acknowledged_at <= life.first_response_at
        assert life.sla_due_at is not None and life.sla_due_at >= created + timedelta(minutes=1440)
        if any(e[0] == "reopen" for e in life.events):  # a reopen starts the SLA again
            reopened = max(e[3] for e in life.events if e[0] == "reopen")
            assert life.sla_due_at == reopened + timedelta(minutes=1440)
        assert 0 <= life.escalation_level <= ESCALATION_MAX
        if life.escalation_level:
            assert life.priority < "P3"  # one step up per level, P1 at most
        if life.status in ("new", "acknowledged") and life.escalation_level < ESCALATION_MAX:
            assert life.next_escalation_at is not None
    # Old assignments end closed, recent ones open: every state occurs.
    assert {"new", "acknowledged", "responded", "resolved", "dismissed"} <= set(seen)
    assert seen["resolved"] + seen["dismissed"] > 6_000 * 0.6
    assert seen["reopened"] > 0
