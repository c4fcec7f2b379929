"""The API benchmark's own logic: the open-loop schedule, the statistics, the request mix, vegeta's
targets and results read back against the schedule, the plan lines and the generated workflow data (no
database, no timing)."""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlsplit

import pytest

from bench.api_lifecycle import ESCALATION_MAX, lifecycle
from bench.api_load import (
    Hit,
    due_times,
    read_vegeta_csv,
    sender_lag_ns,
    summarise,
    summary,
    vegeta_closed_loop,
    vegeta_open_loop,
    vegeta_rate,
    vegeta_targets,
)
from bench.api_plans import key_lines
from bench.api_workload import LIST_TEMPLATES, Catalog, Request, workload
from bench.pipeline import BenchFailure

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


# --- vegeta -----------------------------------------------------------------------------------------------

MS = 1_000_000  # ns


@pytest.mark.parametrize(
    ("rate", "flag", "interval_ns"),
    [
        (200.0, "200/1s", 5 * MS),
        (70.0, "70/1s", 14_285_714),
        (1.0, "1/1s", 1_000 * MS),
        (12.5, "12500/1000s", 80 * MS),
        (0.5, "500/1000s", 2_000 * MS),
    ],
)
def test_vegeta_rate_and_its_interval(rate: float, flag: str, interval_ns: int) -> None:
    assert vegeta_rate(rate) == (flag, interval_ns)


@pytest.mark.parametrize("rate", [0.0, -1.0])
def test_vegeta_rate_refuses_a_rate_that_is_not_positive(rate: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        vegeta_rate(rate)


def test_vegeta_targets_carry_each_keys_headers_the_query_and_the_position() -> None:
    headers = {"admin": {"Authorization": "Bearer A"}, "scoped": {"Authorization": "Bearer S"}}
    requests = [
        Request(
            "list", "list:first", "q phrase", "admin", "/v1/mentions", (("q", '"dark mode" OR offline'),)
        ),
        Request("detail", "detail", "scoped", "scoped", "/v1/mentions/m1"),
        Request(
            "list", "list:cursor", "x", "scoped", "/v1/mentions", (("status", "new"), ("cursor", "a+b/c="))
        ),
    ]
    lines = list(vegeta_targets(requests, "http://127.0.0.1:8123", headers))
    assert len(lines) == 3 and all("\n" not in line for line in lines)
    for i, (line, req) in enumerate(zip(lines, requests, strict=True)):
        target = json.loads(line)
        assert target["method"] == "GET"
        assert target["header"] == {"Authorization": [headers[req.key]["Authorization"]]}
        url = urlsplit(target["url"])
        assert (url.scheme, url.netloc, url.path, url.fragment) == (
            "http",
            "127.0.0.1:8123",
            req.path,
            str(i),
        )
        assert tuple(parse_qsl(url.query)) == req.params  # the cursor's + and / arrive as they were


def _row(seq: int, url: str, sent_ns: int = 0, latency_ns: int = MS, code: int = 200, error: str = "") -> str:
    return f'{sent_ns},{code},{latency_ns},0,0,"{error}",,,{seq},GET,{url},'


def test_vegeta_results_are_read_back_by_position_and_ticks_past_the_end_dropped() -> None:
    rows = [
        _row(0, "http://h/v1/mentions?status=new#1", 10, 2 * MS),
        _row(1, "http://h/v1/queues#0", 20, 3 * MS, code=500, error="500 Internal Server Error"),
        _row(
            2, "http://h/v1/mentions/x#2", 30, 4 * MS, code=0, error="Get ...: connection refused, retrying"
        ),
        "40,0,5,0,0,no targets to attack,,,3,,,",  # the tick after the targets ran out: nothing was sent
    ]
    hits = read_vegeta_csv(rows)
    assert hits == [
        Hit(0, 1, 10, 2 * MS, 200, ""),
        Hit(1, 0, 20, 3 * MS, 500, "500 Internal Server Error"),
        Hit(2, 2, 30, 4 * MS, 0, "Get ...: connection refused, retrying"),
    ]
    assert hits[0].end_ns == 10 + 2 * MS


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("1,200,1,0,0,,,,0,GET,http://h/v1/queues,", "does not end in #"),
        ("1,200,1,0,0,,,,0,GET,http://h/v1/queues#x,", "does not end in #"),
        ("1,200,1,0,0,,,,0,GET", "12 fields"),
    ],
)
def test_a_vegeta_result_that_cannot_be_placed_is_an_error(row: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_vegeta_csv([row])


def _requests(n: int) -> list[Request]:
    return [Request(cls, cls, cls, "admin", f"/{cls}") for cls in (["list", "detail", "queues"] * n)[:n]]


def test_open_loop_latency_counts_from_the_due_time_on_vegetas_schedule() -> None:
    """Rate 100/s, so hit i is due at began + (i + 1) * 10 ms; 2 workers. A hit that waits for a busy
    pool waits in the API's time (counted in its latency from the due time, not in the sender's lag);
    a hit sent after a worker was free is vegeta's own lag."""
    began = 1_000 * MS
    table = [  # (seq, request index, sent after began, latency)
        (0, 2, 10 * MS, 35 * MS),  # due 10, ends 45
        (1, 0, 20 * MS, 50 * MS),  # due 20, ends 70
        (2, 1, 45 * MS, 10 * MS),  # due 30, both workers busy until 45: sent then, ends 55
        (3, 3, 58 * MS, 2 * MS),  # due 40, a worker free at 55, sent at 58: 3 ms of vegeta's own lag
        (4, 4, 60 * MS, 1 * MS),  # due 50, next worker free at 60: sent then
    ]
    hits = [Hit(seq, index, began + sent, lat, 200, "") for seq, index, sent, lat in table]
    requests = _requests(5)
    samples, timing = vegeta_open_loop(list(reversed(hits)), requests, interval_ns=10 * MS, workers=2)
    assert [s.request for s in samples] == [requests[i] for _, i, _, _ in table]
    assert [round(s.latency_ms, 3) for s in samples] == [35.0, 50.0, 25.0, 20.0, 11.0]
    assert [round(s.at_s, 3) for s in samples] == [0.0, 0.01, 0.02, 0.03, 0.04]
    assert timing == {
        "send_schedule_s": 0.05,
        "sender_max_behind_ms": 3.0,
        "queued_max_ms": 18.0,
        "finished_s": 0.06,
    }
    s = summarise(samples)["classes"]
    assert {cls: v["count"] for cls, v in s.items()} == {"detail": 2, "list": 2, "queues": 1}


@pytest.mark.parametrize(
    ("sent", "ends", "workers", "lags"),
    [
        # on time, pool never full
        ([10, 20, 30], [15, 25, 35], 4, [0, 0, 0]),
        # vegeta itself stalled 30 ms: every hit due in the stall is late by what remained of it
        ([10, 50, 50, 50], [11, 51, 51, 51], 4, [0, 30, 20, 10]),
        # one worker, busy until 100: the waits are the API's, not the sender's
        ([10, 100, 101, 102], [100, 101, 102, 103], 1, [0, 0, 0, 0]),
        # one worker free at 100, hit sent at 110: 10 ms of the sender's own
        ([10, 110], [100, 111], 1, [0, 10]),
    ],
)
def test_the_senders_own_lag_leaves_out_waits_for_a_busy_pool(
    sent: list[int], ends: list[int], workers: int, lags: list[int]
) -> None:
    hits = [Hit(i, i, s * MS, (e - s) * MS, 200, "") for i, (s, e) in enumerate(zip(sent, ends, strict=True))]
    assert sender_lag_ns(hits, lambda h: (h.seq + 1) * 10 * MS, workers) == [x * MS for x in lags]


@pytest.mark.parametrize(
    ("indices", "message"),
    [([0, 1], "sent 2 of the 3"), ([0, 1, 1], "twice"), ([0, 1, 3], "twice or one that was not asked")],
)
def test_an_open_loop_attack_that_did_not_send_every_request_once_fails(
    indices: list[int], message: str
) -> None:
    hits = [Hit(seq, i, (seq + 1) * 10 * MS, MS, 200, "") for seq, i in enumerate(indices)]
    with pytest.raises(BenchFailure, match=message):
        vegeta_open_loop(hits, _requests(3), interval_ns=10 * MS, workers=4)


def test_closed_loop_latency_is_the_service_time_from_the_send() -> None:
    hits = [
        Hit(0, 0, 5 * MS, 40 * MS, 200, ""),
        Hit(1, 1, 5 * MS, 90 * MS, 200, ""),
        Hit(2, 2, 45 * MS, 60 * MS, 503, "503"),
    ]
    samples, timing = vegeta_closed_loop(hits, _requests(10))  # a closed loop uses the targets it gets to
    assert [s.latency_ms for s in samples] == [40.0, 90.0, 60.0]
    assert [s.status for s in samples] == [200, 200, 503]
    assert [round(s.at_s, 3) for s in samples] == [0.0, 0.0, 0.04]
    assert timing == {"finished_s": 0.1, "achieved_per_s": 30.0}
