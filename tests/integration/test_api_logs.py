"""The API process logs like every other service: uvicorn's lines (start-up, the access log) too follow
MR_LOG_JSON and MR_LOG_LEVEL. A collector reading JSON lines gets nothing else, and MR_LOG_LEVEL=WARNING
silences the access log (uvicorn used to configure its own plain handlers at INFO whatever was set)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import pytest

from devsupport.processes import ServiceProcesses, free_port


def _serve_one_request(tmp_path: Path, pg_url: str, **env: str) -> list[str]:
    """The API process's log lines after start-up, one request (to a path with an `api_key=`) and a stop."""
    port = free_port()
    procs = ServiceProcesses(
        {
            **os.environ,
            "MR_DATABASE_URL": pg_url,
            "MR_API_HOST": "127.0.0.1",
            "MR_API_PORT": str(port),
            "MR_METRICS_PORT": str(free_port()),
            "MR_API_AUTH": "false",
            "PYTHONUNBUFFERED": "1",
            **env,
        },
        tmp_path,
    )
    procs.start("api")
    try:
        deadline = time.monotonic() + 60
        while True:
            procs.check_alive()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, procs.tail("api")
            time.sleep(0.2)
        healthz = httpx.get(f"http://127.0.0.1:{port}/healthz?api_key=secret-value", timeout=5)
        assert healthz.status_code == 200
    finally:
        assert procs.stop() == {"api": 0}
    return (tmp_path / "api.log").read_text().splitlines()


@pytest.mark.parametrize("level", ["INFO", "WARNING"])
def test_every_line_of_the_api_follows_the_log_settings(tmp_path: Path, pg_url: str, level: str) -> None:
    lines = _serve_one_request(tmp_path, pg_url, MR_LOG_JSON="true", MR_LOG_LEVEL=level)
    records = [json.loads(line) for line in lines]  # every line is JSON
    access = [r for r in records if r["logger"] == "uvicorn.access"]
    if level == "INFO":
        assert any("GET /readyz" in r["message"] for r in access)
        healthz = next(r["message"] for r in access if "/healthz" in r["message"])
        assert "secret-value" not in healthz and "api_key=[redacted]" in healthz
        assert any(r["logger"] == "uvicorn.error" and "startup complete" in r["message"] for r in records)
    else:
        assert access == []
        assert all(r["level"] in ("WARNING", "ERROR", "CRITICAL") for r in records)
