"""Fuzz the whole API from its own OpenAPI document with schemathesis, against a real PostgreSQL: the API
runs as its own process (keys on, an admin key) over a database with routed mentions in it; every
operation gets generated requests, valid and invalid, with every check schemathesis has (`--checks all`):
no 5xx, status codes, content types, headers and bodies as documented, invalid input refused, valid input
accepted or refused with a documented 4xx problem (tests/fuzz/schemathesis.toml says which), `Allow` on
OPTIONS and 405, auth not ignored, deleted resources gone.

Every operation, those that take a URL included (sources, webhooks, a webhook's test ping): the run's
hooks point generated URLs at a local receiver (tests/fuzz/hooks.py), and the API process can resolve and
dial loopback only (tests/fuzz/jail/sitecustomize.py), so nothing generated leaves the machine. The event
stream is read for a second a case.

`make test` runs a small deterministic sample (MR_FUZZ_MAX_EXAMPLES, 25 per operation, about a minute);
`make fuzz` runs many more, from a new seed each time (MR_FUZZ_SEED, printed for replaying a failure).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from devsupport.factories import TEMPLATES, classified_event
from devsupport.processes import ServiceProcesses, free_port
from devsupport.scenario import wait_for
from devsupport.webhook_receiver import webhook_receiver
from services.router.service import RouterService
from shared.bus import MemoryBus, Record
from shared.bus.codec import encode
from shared.db import create_engine, session_factory
from shared.routing import RuleSet
from shared.settings import REPO_ROOT, BusKind, Settings

HERE = Path(__file__).parent
# Examples per operation, and the seed (none: schemathesis's deterministic mode, the same cases each run).
MAX_EXAMPLES = int(os.environ.get("MR_FUZZ_MAX_EXAMPLES", "25"))
SEED = os.environ.get("MR_FUZZ_SEED")
TIMEOUT_S = int(os.environ.get("MR_FUZZ_TIMEOUT_S", "420"))

pytestmark = [pytest.mark.postgres, pytest.mark.e2e, pytest.mark.timeout(TIMEOUT_S + 120)]


async def _seed(pg_url: str, settings: Settings) -> None:
    """Routed mentions, by the router's own code, for the reads to find."""
    engine = create_engine(pg_url)
    router = RouterService(
        settings=settings,
        bus=MemoryBus(),
        sessions=session_factory(engine),
        rules=RuleSet.from_file(settings.routing_file),
    )
    await router.load_rules()
    events = [classified_event(i) for i in range(len(TEMPLATES) * 3)]
    messages = [encode(topic="t", key=e.mention.id, event=e, source="/t") for e in events]
    await router.handle(
        [Record(topic="t", partition=0, offset=n, key=m.key, value=m.value) for n, m in enumerate(messages)]
    )
    await engine.dispose()


async def test_the_api_survives_fuzzing_and_keeps_to_its_document(pg_url: str, tmp_path: Path) -> None:
    settings = Settings().model_copy(update={"database_url": pg_url, "bus": BusKind.MEMORY})
    await _seed(pg_url, settings)
    key_id = secrets.token_hex(4)
    key = f"mr_{key_id}_{secrets.token_urlsafe(32)}"
    port = free_port()
    taxonomy = tmp_path / "taxonomy.yaml"
    taxonomy.write_bytes(settings.taxonomy_file.read_bytes())  # PUT /v1/taxonomy writes here, not in config/
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE / "jail"), os.environ.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        ),
        "MR_BUS": "memory",
        "MR_DATABASE_URL": pg_url,
        "MR_API_PORT": str(port),
        "MR_API_AUTH": "true",
        "MR_API_BOOTSTRAP_KEY": key,
        "MR_API_RATE_LIMIT_PER_S": "0",
        "MR_TAXONOMY_FILE": str(taxonomy),
        "MR_WEBHOOK_WORKER": "false",
        # The receiver of the run's sources and webhooks is on loopback (tests/fuzz/hooks.py).
        "MR_INGEST_ALLOWED_NETWORKS": "127.0.0.1",
        "MR_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1",
        "MR_WEBHOOK_ALLOW_HTTP": "true",
        "MR_LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    procs = ServiceProcesses(env, tmp_path)
    procs.start("api")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:

            async def up() -> bool:
                procs.check_alive()
                try:
                    return (await client.get("/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_for(up, within=60, what="the API")
        with webhook_receiver() as sink:
            run = await asyncio.to_thread(
                subprocess.run,
                [
                    str(Path(sys.executable).parent / "schemathesis"),
                    "--config-file",
                    str(HERE / "schemathesis.toml"),
                    "run",
                    f"http://127.0.0.1:{port}/openapi.json",
                    "--checks",
                    "all",
                    "--header",
                    f"Authorization: Bearer {key}",
                    "--max-examples",
                    str(MAX_EXAMPLES),
                    *(["--seed", SEED] if SEED else ["--generation-deterministic"]),
                    "--request-timeout",
                    "20",
                    "--no-color",
                ],
                cwd=REPO_ROOT,
                env={
                    **os.environ,
                    "MR_FUZZ_SINK": f"http://127.0.0.1:{sink.port}",
                    "MR_FUZZ_KEEP_KEY_ID": key_id,
                },
                capture_output=True,
                text=True,
                timeout=TIMEOUT_S,
            )
        procs.check_alive()
    finally:
        codes = procs.stop(timeout=20)
    report = run.stdout[-20_000:] + run.stderr[-5_000:]
    # `make fuzz` shows the warnings (which operations the run reached little) and the summary (-rP).
    start = run.stdout.rfind("== WARNINGS ==")
    print(run.stdout[start if start >= 0 else run.stdout.rfind("== SUMMARY ==") :])
    assert run.returncode == 0, f"schemathesis found problems:\n{report}\n--- api log\n{procs.tail('api')}"
    assert "Selected: " in run.stdout and "Tested: " in run.stdout, report
    assert codes == {"api": 0}
