"""deploy/compose/compose.yaml, run without Docker: each service's command, environment and healthcheck
exactly as the file gives them, as processes against the real Kafka and PostgreSQL, in the order its
`depends_on` conditions impose (jobs must exit 0, services must pass their own healthcheck).

What differs from `docker compose up`, and why: every container has its own network namespace, these
processes share one, so host names become the local broker and a fresh database, each service gets its
own loopback port, and the topics a test-only prefix. The image itself is not built (no Docker engine).
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from devsupport.factories import make_entries, rss
from devsupport.feedserver import FeedServer
from devsupport.kafka import partitions
from devsupport.processes import free_port
from devsupport.scenario import wait_for
from shared.settings import REPO_ROOT
from tests.conftest import KafkaEnv

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.postgres]

COMPOSE = REPO_ROOT / "deploy" / "compose" / "compose.yaml"
APP = ("api", "router", "classifier", "ingest")
JOBS = ("migrate", "topics")
ADMIN_KEY = f"mr_{secrets.token_hex(4)}_{secrets.token_urlsafe(32)}"
EXTERNAL = ("kafka", "postgres")  # the real local ones, healthy by construction


def _interpolate(value: Any) -> Any:
    """Compose's ${VAR:-default} with an empty environment: every default applies."""
    if isinstance(value, str):
        return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)
    if isinstance(value, dict):
        return {k: _interpolate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v) for v in value]
    return value


class Stack:
    def __init__(self, services: dict[str, Any], env: dict[str, dict[str, str]], logs: Path) -> None:
        self.services = services
        self.env = env
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.done: set[str] = set(EXTERNAL)

    def _argv(self, name: str) -> list[str]:
        # The image's entrypoint is `mention-router`; `python -m services.cli` is the same program.
        return [sys.executable, "-m", "services.cli", *self.services[name]["command"]]

    async def _satisfied(self, name: str) -> bool:
        for dependency, spec in (self.services[name].get("depends_on") or {}).items():
            if dependency not in self.done:
                return False
            condition = spec["condition"]
            assert condition in ("service_healthy", "service_completed_successfully"), (name, condition)
        return True

    async def _healthy(self, name: str) -> bool:
        proc = self.procs[name]
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")
        test = self.services[name]["healthcheck"]["test"]
        assert test[0] == "CMD" and test[1] == "python", test
        check = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, *test[2:]],
            cwd=REPO_ROOT,
            env=self.env[name],
            capture_output=True,
            timeout=30,
        )
        return check.returncode == 0

    def _spawn(self, name: str) -> None:
        with (self.logs / f"{name}.log").open("wb") as log:
            self.procs[name] = subprocess.Popen(
                self._argv(name), cwd=REPO_ROOT, env=self.env[name], stdout=log, stderr=subprocess.STDOUT
            )

    async def up(self) -> None:
        """Start everything in depends_on order, as compose would; jobs first must exit 0."""
        pending = [*JOBS, *APP]
        deadline = time.monotonic() + 180
        while pending:
            if time.monotonic() > deadline:
                raise AssertionError(f"compose order stuck; waiting: {pending}, done: {sorted(self.done)}")
            for name in list(pending):
                if not await self._satisfied(name):
                    continue
                pending.remove(name)
                self._spawn(name)
                if name in JOBS:
                    code = await asyncio.to_thread(self.procs[name].wait, 120)
                    assert code == 0, f"job {name} exited with {code}:\n{self.tail(name)}"
                    self.done.add(name)
                else:
                    await wait_for(lambda n=name: self._healthy(n), within=90, what=f"{name}'s healthcheck")
                    self.done.add(name)
            await asyncio.sleep(0.1)

    def tail(self, name: str, lines: int = 40) -> str:
        text = (self.logs / f"{name}.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def down(self, timeout: float = 20.0) -> dict[str, int | None]:
        for name in APP:
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        deadline = time.monotonic() + timeout
        for name in APP:
            proc = self.procs.get(name)
            if proc is None:
                continue
            try:
                codes[name] = proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                codes[name] = None
        return codes


def _metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_compose_services_start_in_order_pass_their_healthchecks_and_route(
    kafka: KafkaEnv, empty_pg_url: str, server: FeedServer, tmp_path: Path
) -> None:
    compose = yaml.safe_load(COMPOSE.read_text())  # merge keys (<<: *app) resolved by the loader
    services = _interpolate(compose["services"])
    api_port = free_port()
    metrics_ports = {name: free_port() for name in ("api", "ingest", "classifier", "router")}
    env: dict[str, dict[str, str]] = {}
    for name in (*JOBS, *APP):
        given = {k: str(v) for k, v in (services[name].get("environment") or {}).items()}
        assert given["MR_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert given["MR_DATABASE_URL"].startswith("postgresql+asyncpg://mention_router:")
        env[name] = {
            **os.environ,
            **given,
            # One network namespace for all: the hosts and ports of the containers, here.
            "MR_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
            "MR_DATABASE_URL": empty_pg_url,
            "MR_TOPIC_PREFIX": kafka.prefix,
            "MR_API_HOST": "127.0.0.1",
            "MR_API_PORT": str(api_port),
            "MR_METRICS_HOST": "127.0.0.1",
            "MR_METRICS_PORT": str(metrics_ports.get(name, 0)),
            # The feed server of this test is on loopback, which ingest refuses unless allowed.
            "MR_INGEST_ALLOWED_NETWORKS": "127.0.0.1",
            "MR_INGEST_SOURCES_REFRESH_S": "0.5",
            # As .env.example says: the API's first admin key from the environment (keys are on).
            "MR_API_AUTH": "true",
            "MR_API_BOOTSTRAP_KEY": ADMIN_KEY,
            "PYTHONUNBUFFERED": "1",
        }
    stack = Stack(services, env, tmp_path)
    try:
        await stack.up()

        described = await partitions(
            kafka.bootstrap, [f"{kafka.prefix}mentions.raw", f"{kafka.prefix}mentions.dlq"]
        )
        count = {t: sum(tp.topic == t for tp in described) for t in {tp.topic for tp in described}}
        assert count == {f"{kafka.prefix}mentions.raw": 4, f"{kafka.prefix}mentions.dlq": 1}

        server.serve("/feed.xml", rss(make_entries(20, prefix="compose")), content_type="application/rss+xml")
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{api_port}",
            timeout=10,
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        ) as api:
            created = await api.post(
                "/v1/sources",
                json={"name": "compose", "url": server.url("/feed.xml"), "poll_interval_seconds": 60},
            )
            assert created.status_code == 201, created.text

            async def routed() -> bool:
                queues = (await api.get("/v1/queues")).json()["departments"]
                return len(
                    (await api.get("/v1/mentions", params={"limit": 200})).json()["items"]
                ) == 20 and any(q["total"] for q in queues)

            await wait_for(routed, within=90, what="20 mentions routed through the compose services")
            # The metrics are on the metrics port only, not on the API's (nor behind its key).
            assert (await api.get("/metrics")).status_code == 404
        async with httpx.AsyncClient(timeout=10) as http:

            async def queues_reported() -> bool:
                text = (await http.get(f"http://127.0.0.1:{metrics_ports['api']}/metrics")).text
                return any(n == "mr_queue_assignments" and v > 0 for (n, _), v in _metrics(text).items())

            # Computed in the background every MR_METRICS_BUSINESS_INTERVAL_S (15 s).
            await wait_for(queues_reported, within=60, what="the API's queue gauges")
            for stage, port in metrics_ports.items():
                if stage == "api":
                    continue
                samples = _metrics((await http.get(f"http://127.0.0.1:{port}/metrics")).text)
                taken = samples.get(("mr_messages_in_total", (("stage", stage),)), 0)
                assert taken >= 20, f"{stage} counted {taken} messages in"
    finally:
        codes = stack.down()
    assert codes == dict.fromkeys(APP, 0), {n: stack.tail(n) for n, c in codes.items() if c != 0}
