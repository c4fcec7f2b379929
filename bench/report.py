"""The bench's report: the targets each figure is judged against, and the table `make bench` prints."""

from __future__ import annotations

from typing import Any

TARGETS = {
    "pipeline.throughput_per_s": (">=", 5_000.0),
    "pipeline.relay_ratio": (">=", 0.25),
    "pipeline.latency_ms.p99": ("<", 250.0),
    "rss_mb.*": ("<", 200.0),
    "rules.evaluations_per_s": (">=", 50_000.0),
}


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """Each judged figure: its target, its value, and whether it was met."""
    p = result["pipeline"]
    out: dict[str, Any] = {}
    rules = result.get("pipeline_rules")
    if rules is not None:
        out["rules_throughput_per_s"] = {
            "target": ">= 5000 (rules engine)",
            "value": rules["throughput_per_s"],
            "met": rules["throughput_per_s"] >= 5_000,
        }
        out["rules_relay_ratio"] = {
            "target": ">= 0.25 (rules engine)",
            "value": rules.get("relay_ratio"),
            "met": rules.get("relay_ratio") is not None and rules["relay_ratio"] >= 0.25,
        }
        out["rules_latency_p99_ms"] = {
            "target": "< 250 at 1000/s (rules engine)",
            "value": rules["latency_ms"]["p99"],
            "met": rules["latency"]["offered_per_s"] >= 1_000 and rules["latency_ms"]["p99"] < 250,
        }
    rss = max(v["peak_mb"] for name, v in p["rss"].items() if not name.startswith("classifier"))
    out["rss_mb_max"] = {"target": "< 200 per service but the classifier", "value": rss, "met": rss < 200}
    router = result["router"]
    out["router_stored_per_s"] = {
        "target": ">= 5000",
        "value": router["throughput_per_s"],
        "met": router["throughput_per_s"] >= 5_000,
    }
    router_rss = max(v["peak_mb"] for v in router["rss"].values())
    out["router_rss_mb"] = {"target": "< 150", "value": router_rss, "met": router_rss < 150}
    c = result["classifier"]
    out["classifier_per_s"] = {
        "target": ">= 150 (default engine)",
        "value": c["throughput_per_s"],
        "met": c["throughput_per_s"] >= 150,
    }
    classifier_rss = max(
        [v["peak_mb"] for v in c["rss"].values()]
        + [v["peak_mb"] for name, v in p["rss"].items() if name.startswith("classifier")]
    )
    out["classifier_rss_mb"] = {
        "target": "< 250 (default model)",
        "value": classifier_rss,
        "met": classifier_rss < 250,
    }
    cr = result["classifier_rules"]
    out["classifier_rules_relay_ratio"] = {
        "target": ">= 0.5 (rules engine)",
        "value": cr.get("relay_ratio"),
        "met": cr.get("relay_ratio") is not None and cr["relay_ratio"] >= 0.5,
    }
    cli = result["classify_cli"]
    out["classify_cli_per_s"] = {
        "target": f">= 150 over {cli['mentions']:,} mentions, start-up included",
        "value": cli["per_s"],
        "met": cli["per_s"] >= 150,
    }
    r = result["rules"]
    out["rules_evaluations_per_s"] = {
        "target": f">= 50000 per core, {r['rules']} rules",
        "value": r["evaluations_per_s"],
        "met": r["evaluations_per_s"] >= 50_000,
    }
    return out


_Row = tuple[str, str, str]  # what was measured, the figure, its target (or a note)


def table(result: dict[str, Any]) -> str:
    """The run's figures as the table `make bench` prints, one line per figure."""
    p = result["pipeline"]
    rows: list[_Row] = []
    if "relay" in result:
        rows += [
            ("raw produce (1 producer)", f"{result['produce']['throughput_per_s']:,.0f} msg/s", ""),
            ("bare relay (consume -> produce)", f"{result['relay']['throughput_per_s']:,.0f} msg/s", ""),
        ]
    engine = result["settings"]["classifier_engine"]
    rows += _pipeline_rows(result, f"pipeline, engine {engine}", p, judged=False)
    rows += _pipeline_rows(result, "pipeline, engine rules", result.get("pipeline_rules"), judged=True)
    rows += _resource_rows(result)
    rows += _router_rows(result)
    rows += _classifier_rows(result, "classifier", rate_mark="classifier_per_s", relay_mark="")
    rows += _classifier_rows(
        result, "classifier_rules", rate_mark="", relay_mark="classifier_rules_relay_ratio"
    )
    rows += _cli_and_rules_rows(result)
    checks = p["checks"]
    rows.append(
        (
            "stored exactly once / dead-lettered",
            f"{checks['stored']:,}/{checks['published']:,} / {checks['dead_lettered']}",
            "ok" if checks["ok"] else "FAILED",
        )
    )
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    m = result["machine"]
    head = (
        f"mention-router bench ({result['mode']}) {result['timestamp']}  commit {m['git_commit'][:10]}"
        f"{' (dirty)' if m['git_dirty'] else ''}\n"
        f"{m['cores']} cores {m['cpu_model']}, {m['memory_gb']} GB; Python {m['python']}, "
        f"aiokafka {m['aiokafka']}, Kafka {m['kafka']}, PostgreSQL {m['postgres']}\n"
    )
    lines = [f"  {a:<{width}}  {b:>{vwidth}}  {c}".rstrip() for a, b, c in rows]
    return head + "\n".join(lines) + "\n"


def _mark(result: dict[str, Any], key: str) -> str:
    """A figure's target and whether it was met (quick runs are not judged)."""
    if result["mode"] == "quick":
        return "(quick: not judged)"
    t = result["targets"]
    return f"target {t[key]['target']}: {'met' if t[key]['met'] else 'MISSED'}"


def _pipeline_rows(
    result: dict[str, Any], line: str, q: dict[str, Any] | None, *, judged: bool
) -> list[_Row]:
    """A pipeline's throughput, its ratio to the bare relay, and its latency (none if it did not run)."""
    if q is None:
        return []
    ql = q["latency"]
    rows: list[_Row] = [
        (
            f"{line}, {q['mentions']:,} mentions ({q['classifiers']} classifier, {q['routers']} router)",
            f"{q['throughput_per_s']:,.0f} mentions/s",
            _mark(result, "rules_throughput_per_s")
            if judged
            else f"limited by {q.get('limiting_stage', '?')}",
        )
    ]
    if "relay_ratio" in q:
        rows.append(
            (
                f"{line} / bare relay",
                f"{q['relay_ratio']:.1%}",
                _mark(result, "rules_relay_ratio") if judged else "",
            )
        )
    rows += [
        (
            f"{line}: latency p50 at {ql['offered_per_s']:,.0f}/s ({ql['routed_events']:,} events)",
            f"{ql['latency_ms']['p50']:,.1f} ms",
            "",
        ),
        (
            f"{line}: latency p99 at {ql['offered_per_s']:,.0f}/s",
            f"{ql['latency_ms']['p99']:,.1f} ms",
            _mark(result, "rules_latency_p99_ms") if judged else "",
        ),
    ]
    return rows


def _resource_rows(result: dict[str, Any]) -> list[_Row]:
    """The default engine's pipeline: each process's peak memory and CPU per mention, and their sum."""
    p = result["pipeline"]
    rows: list[_Row] = []
    for name, mb in sorted(p["rss"].items()):
        rows.append((f"peak RSS {name}", f"{mb['peak_mb']:.0f} MB", _mark(result, "rss_mb_max")))
    us = p["cpu_us_per_mention"]
    for name in sorted(us):
        rows.append((f"CPU per mention, {name}", f"{us[name]:,} µs", ""))
    rows += [
        (
            "CPU per mention, pipeline (services + broker + database)",
            f"{p['pipeline_cpu_us_per_mention']:,} µs",
            "",
        ),
        ("classifier share of the pipeline's CPU", f"{p['classifier_cpu_share']:.0%}", ""),
        (
            f"CPU-bound ceiling on {result['machine']['cores']} idle cores (cores / CPU per mention)",
            f"{p['cpu_bound_capacity_per_s']:,} mentions/s",
            "",
        ),
        ("machine CPU used by other processes meanwhile", f"{p['other_load_share']:.0%}", ""),
    ]
    return rows


def _router_rows(result: dict[str, Any]) -> list[_Row]:
    ro = result["router"]
    return [
        (
            f"router alone, {ro['mentions']:,} mentions -> PostgreSQL + topics ({ro['routers']} router)",
            f"{ro['throughput_per_s']:,.0f} mentions/s",
            _mark(result, "router_stored_per_s"),
        ),
        *([("router alone / bare relay", f"{ro['relay_ratio']:.1%}", "")] if "relay_ratio" in ro else []),
        ("router CPU per mention (router alone)", f"{ro['router_cpu_us_per_mention']:,} µs", ""),
        *(
            (f"peak RSS {name} (router alone)", f"{mb['peak_mb']:.0f} MB", _mark(result, "router_rss_mb"))
            for name, mb in sorted(ro["rss"].items())
        ),
    ]


def _classifier_rows(result: dict[str, Any], key: str, *, rate_mark: str, relay_mark: str) -> list[_Row]:
    """The classifier alone with one engine; `rate_mark` and `relay_mark` name the targets judged."""
    co = result[key]
    return [
        (
            f"classifier alone, {co['mentions']:,} mentions raw -> classified "
            f"({co['classifiers']} classifier, engine {co['engine']})",
            f"{co['throughput_per_s']:,.0f} mentions/s",
            _mark(result, rate_mark) if rate_mark else "",
        ),
        *(
            [
                (
                    f"  {co['engine']}: / bare relay",
                    f"{co['relay_ratio']:.1%}",
                    _mark(result, relay_mark) if relay_mark else "",
                )
            ]
            if "relay_ratio" in co
            else []
        ),
        (
            f"  {co['engine']}: classifier CPU per mention",
            f"{co['classifier_cpu_us_per_mention']:,} µs",
            "",
        ),
        *(
            (
                f"  {co['engine']}: peak RSS {name}",
                f"{mb['peak_mb']:.0f} MB",
                _mark(result, "classifier_rss_mb"),
            )
            for name, mb in sorted(co["rss"].items())
        ),
    ]


def _cli_and_rules_rows(result: dict[str, Any]) -> list[_Row]:
    """`mention-router classify` over a file, and the routing rules alone against the reference loop."""
    cli = result["classify_cli"]
    r = result["rules"]
    return [
        (
            f"mention-router classify, {cli['mentions']:,} mentions, start-up included",
            f"{cli['per_s']:,.0f} mentions/s",
            _mark(result, "classify_cli_per_s"),
        ),
        (
            f"rule evaluations, {r['rules']} rules, 1 core (mention x whole rule set)",
            f"{r['evaluations_per_s']:,} /s",
            _mark(result, "rules_evaluations_per_s"),
        ),
        (f"rule checks ({r['rules']} per evaluation)", f"{r['rule_checks_per_s']:,} /s", ""),
        (
            "rule evaluations, straightforward loop (baseline)",
            f"{r['reference_per_s']:,} /s",
            f"compiled {r['speedup']}x; decisions {'agree' if r['agrees_with_reference'] else 'DIFFER'}",
        ),
    ]
