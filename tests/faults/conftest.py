"""Fault-injection tests: what each fault did to the delivery guarantees, as a table after the run.

`pytest tests/faults` runs them alone; set MR_FAULTS_REPORT=path.json to keep the figures.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.faults.harness import REPORT, write_report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not REPORT:
        return
    tr = terminalreporter
    tr.section("faults: sent, stored, duplicated, lost")
    header = (
        f"{'fault':<34} {'sent':>6} {'stored':>6} {'dup rows':>8} {'lost':>5} "
        f"{'assign':>6} {'dup/lost':>8} {'topic miss':>10} {'topic dups':>10} {'dlq':>5} {'s':>6}"
    )
    tr.write_line(header)
    for o in REPORT:
        tr.write_line(
            f"{o.fault:<34} {o.sent:>6} {o.stored:>6} {o.duplicated_rows + o.duplicated_assignments:>8} "
            f"{o.lost:>5} {o.assignments_stored:>6} "
            f"{f'{o.duplicated_assignments}/{o.lost_assignments}':>8} {o.missing_on_topics:>10} "
            f"{o.duplicates_on_topics:>10} {o.dead_lettered:>5} {o.seconds:>6.1f}"
        )
    target = os.environ.get("MR_FAULTS_REPORT")
    if target:
        write_report(Path(target), REPORT)
