"""The classifier process opens no database: it never reads one, and SQLAlchemy with asyncpg would add
about 27 MB to a process that has to stay under 200 MB with the MiniLM model loaded."""

from __future__ import annotations

import subprocess
import sys

from shared.settings import REPO_ROOT

_PROGRAM = """
import asyncio, sys
from services.cli import _serve_stage
from shared.settings import BusKind, Settings

async def main() -> None:
    task = asyncio.create_task(_serve_stage("classifier", Settings(bus=BusKind.MEMORY)))
    for _ in range(100):
        await asyncio.sleep(0.05)
        if "shared.classify.engine" in sys.modules:
            break
    await asyncio.sleep(0.2)
    assert not task.done(), task
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    print("started" if "shared.classify.engine" in sys.modules else "not started")
    db = [m for m in sys.modules if m.split(".")[0] in ("sqlalchemy", "asyncpg") or m.startswith("shared.db")]
    print("database modules:", sorted(db))

asyncio.run(main())
"""


def test_the_classifier_stage_runs_without_loading_a_database_client() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROGRAM],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "started" in out.splitlines()
    assert "database modules: []" in out.splitlines()
