"""What each service process loads. The classifier opens no database: it never reads one, and SQLAlchemy
with asyncpg would add about 27 MB to a process that has to stay under 250 MB with the model loaded. And
each service's process, built by its own composition root, loads only its own service package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shared.settings import REPO_ROOT

# Runs one service's `serve` (what `python -m services.<name>` runs) on the in-memory bus and SQLite,
# stops it once it has started, and prints which modules it loaded.
_PROGRAM = """
import asyncio, sys, importlib
from shared.settings import BusKind, Settings

name, db = sys.argv[1], sys.argv[2]
bootstrap = importlib.import_module(f"services.{name}.bootstrap")

async def main() -> None:
    settings = Settings(bus=BusKind.MEMORY, database_url=db, metrics_port=0, api_port=0)
    task = asyncio.create_task(bootstrap.serve(settings))
    await asyncio.sleep(3.0)
    assert not task.done(), task.exception()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    print("services:", sorted({m.split(".")[1] for m in sys.modules if m.startswith("services.")}))
    clients = ("sqlalchemy", "asyncpg")
    loaded = [m for m in sys.modules if m.split(".")[0] in clients or m.split(".")[:2] == ["shared", "db"]]
    print("database modules:", sorted(loaded))

asyncio.run(main())
"""


def _loaded(name: str, tmp_path: Path) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", _PROGRAM, name, f"sqlite+aiosqlite:///{tmp_path}/mr.db"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return out.splitlines()


def test_the_classifier_process_runs_without_loading_a_database_client(tmp_path: Path) -> None:
    assert "database modules: []" in _loaded("classifier", tmp_path)


@pytest.mark.parametrize("name", ["ingest", "classifier", "router", "api"])
def test_each_service_process_loads_only_its_own_service_package(name: str, tmp_path: Path) -> None:
    assert f"services: ['{name}']" in _loaded(name, tmp_path)
