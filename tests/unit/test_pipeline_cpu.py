"""bench.pipeline counts the CPU of PostgreSQL backends that open while a phase runs."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

from bench import infra
from bench.pipeline import _stop_meter

IDLE = "input()\n"
BURN = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass\ninput()\n"


class _Backends:
    def __init__(self, pids: list[int]) -> None:
        self.pids = pids

    async def backend_pids(self, database: str) -> list[int]:
        return self.pids


def _stand_in(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)


def test_a_backend_opened_during_the_phase_is_counted_and_followed_into_the_next() -> None:
    known = _stand_in(IDLE)
    late: subprocess.Popen[bytes] | None = None
    try:
        meter = infra.CpuMeter({"postgres": [known.pid]})
        meter.start()
        # A "backend" that opens after the meter started and does its work before it stops.
        late = _stand_in(BURN)
        while infra.cpu_seconds(late.pid) < 0.4:
            time.sleep(0.02)
        backends = _Backends([known.pid, late.pid])
        cpu = asyncio.run(_stop_meter(meter, backends, "db"))
        assert cpu["cpu_s"]["postgres"] >= 0.4, "the late backend's work is PostgreSQL's"
        assert meter.groups["postgres"] == [known.pid, late.pid]
        # The next phase counts it from its own start: nothing of the first phase again.
        meter.start()
        again = asyncio.run(_stop_meter(meter, backends, "db"))
        assert again["cpu_s"]["postgres"] < 0.2
    finally:
        for process in (known, late):
            if process is not None:
                process.communicate(b"\n", timeout=10)
