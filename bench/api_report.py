"""The API bench's results: a phase's figures (`phase_result`), the targets it is judged by and the text
table `make bench-api` prints (bench/api_bench.py runs the phases)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from bench.api_load import OK, summarise
from bench.api_plans import plan_table

TARGET_P99_MS = {"list": 50.0, "queues": 100.0, "detail": 20.0}
TARGET_RSS_MB = 250.0
TARGET_RATE = 200.0


def phase_result(
    samples: list[Any], timing: dict[str, Any], used: dict[str, Any], rate: float | None
) -> dict[str, Any]:
    """A phase's figures: timing, CPU per request by process, per-class latencies, the first errors."""
    n = len(samples)
    phase: dict[str, Any] = {
        "loop": "closed" if rate is None else "open",
        "offered_per_s": rate,
        "requests": n,
        **timing,
        "cpu": used,
        "cpu_ms_per_request": {k: round(v / n * 1000, 2) for k, v in used["cpu_s"].items()},
        **summarise(samples),
    }
    if rate is not None:
        phase["achieved_per_s"] = round(n / timing["finished_s"], 1)
    # A revalidation phase is worth reading only with its share of 304s (a figure that moved meanwhile,
    # such as an overdue count, makes the copy stale: a full answer).
    phase["statuses"] = {
        str(code): count for code, count in sorted(Counter(s.status for s in samples).items())
    }
    errors = [s for s in samples if s.status not in OK]
    if errors:
        phase["first_errors"] = [
            {"path": e.request.path, "params": dict(e.request.params), "status": e.status, "error": e.error}
            for e in errors[:5]
        ]
    return phase


def targets(result: dict[str, Any]) -> dict[str, Any]:
    mix = result["phases"]["mix"]
    out: dict[str, Any] = {}
    for cls, limit in TARGET_P99_MS.items():
        s = mix["classes"].get(cls, {})
        value = s.get("p99")
        out[f"{cls}_p99_ms"] = {
            "target": f"< {limit:g} at {TARGET_RATE:g}/s",
            "value": value,
            "errors": s.get("errors"),
            "met": value is not None
            and value < limit
            and not s.get("errors")
            and mix["offered_per_s"] >= TARGET_RATE,
        }
    rss = result["rss_mb"]["peak_mb"]
    out["api_rss_mb"] = {"target": f"< {TARGET_RSS_MB:g}", "value": rss, "met": rss < TARGET_RSS_MB}
    return out


def table(result: dict[str, Any]) -> str:
    m, d = result["machine"], result["data"]
    head = (
        f"mention-router API bench ({result['mode']}) {result['timestamp']}  commit {m['git_commit'][:10]}"
        f"{' (dirty)' if m['git_dirty'] else ''}\n"
        f"{m['cores']} cores {m['cpu_model']}, {m['memory_gb']} GB; load average at start "
        f"{' '.join(str(x) for x in m['load_average_at_start'])}; PostgreSQL {m['postgres']}; load from "
        f"{result['parameters']['loader']['tool']} {result['parameters']['loader']['version']}\n"
        f"data: {d['mentions']:,} mentions, {d['rows']['assignments']:,} assignments, "
        f"{d['rows']['mention_topics']:,} topic rows, {d['rows']['activity']:,} activity rows; "
        f"database {d['database_mb']:,.0f} MB; "
        + (
            "reused"
            if d["reused"]
            else f"generated in {d['seconds']['total_s']:.0f} s "
            f"(copy {d['seconds']['copy_s']:.0f} s, indexes {d['seconds']['indexes_s']:.0f} s, "
            f"vacuum+analyze {d['seconds']['vacuum_analyze_s']:.0f} s)"
        )
        + "\n"
    )
    judged = result["mode"] != "quick"
    lines = [head]
    for phase, p in result["phases"].items():
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in p["cpu_ms_per_request"].items())
        if "304" in p.get("statuses", {}):
            cpu += f"; 304 for {100 * p['statuses']['304'] / max(1, p['requests']):.0f} %"
        if p["loop"] == "closed":
            lines.append(
                f"  {phase}: closed loop, {result['parameters']['workers']} clients: "
                f"{p['achieved_per_s']:,.0f} requests/s (service times below, not open-loop latencies; "
                f"CPU ms/request {cpu})"
            )
        else:
            queued = (
                f", waited for a connection up to {p['queued_max_ms']:,.0f} ms"
                if "queued_max_ms" in p
                else ""
            )
            lines.append(
                f"  {phase}: {p['requests']:,} requests at {p['offered_per_s']:g}/s, answered at "
                f"{p['achieved_per_s']:,.0f}/s (sender behind at most {p['sender_max_behind_ms']:.0f} ms"
                f"{queued}; CPU ms/request {cpu})"
            )
        for group in ("classes", "kinds"):
            for name, s in p[group].items():
                if group == "kinds" and name in p["classes"]:
                    continue
                if not s["count"]:
                    continue
                mark = ""
                if phase == "mix" and name in TARGET_P99_MS:
                    t = result["targets"][f"{name}_p99_ms"]
                    mark = f"  target p99 < {TARGET_P99_MS[name]:g} ms: " + (
                        ("met" if t["met"] else "MISSED") if judged else "(quick: not judged)"
                    )
                lines.append(
                    f"    {name:<14} n={s['count']:>6,}  p50 {s['p50']:>8.1f}  p99 {s['p99']:>8.1f}  "
                    f"max {s['max']:>8.1f} ms  errors {s['errors']}{mark}"
                )
    rss = result["targets"]["api_rss_mb"]
    lines.append(
        f"  API peak RSS {result['rss_mb']['peak_mb']:.0f} MB  target < {TARGET_RSS_MB:g} MB: "
        + (("met" if rss["met"] else "MISSED") if judged else "(quick: not judged)")
    )
    lines.append(plan_table(result["plans"]))
    return "\n".join(lines)
