"""Fixtures for the real Kafka broker and PostgreSQL server.

Where they come from, in order:
1. `MR_KAFKA_BOOTSTRAP_SERVERS` / `MR_TEST_POSTGRES_URL` (or `MR_DATABASE_URL`) when set;
2. testcontainers, when a Docker engine answers;
3. the local scripts under deploy/local/, which install and start them on loopback.
A broker or database that cannot be reached fails the tests that need it; nothing is skipped.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from shared.db import migrate
from shared.settings import REPO_ROOT, BusKind, Settings

LOCAL = REPO_ROOT / "deploy" / "local"


def _docker_available() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means "no Docker engine here"
        return False


def _script_env(script: str) -> dict[str, str]:
    subprocess.run([str(LOCAL / script), "start"], check=True, timeout=600)
    out = subprocess.run([str(LOCAL / script), "env"], check=True, capture_output=True, text=True).stdout
    env: dict[str, str] = {}
    for line in out.splitlines():
        line = line.removeprefix("export ").strip()
        if "=" in line:
            key, value = line.split("=", 1)
            env[key] = value.strip("'\"")
    return env


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    configured = os.environ.get("MR_KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    if _docker_available():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
        return
    yield _script_env("kafka.sh")["MR_KAFKA_BOOTSTRAP_SERVERS"]


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """An asyncpg URL of a PostgreSQL server where the tests may create databases."""
    configured = os.environ.get("MR_TEST_POSTGRES_URL") or os.environ.get("MR_DATABASE_URL")
    if configured and configured.startswith("postgresql"):
        yield configured
        return
    if _docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver="asyncpg") as pg:
            yield pg.get_connection_url()
        return
    yield _script_env("postgres.sh")["MR_DATABASE_URL"]


async def _create_database(server_url: str, name: str) -> str:
    import asyncpg

    url = make_url(server_url)
    conn = await asyncpg.connect(
        host=url.host, port=url.port, user=url.username, password=url.password, database=url.database
    )
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return url.set(database=name).render_as_string(hide_password=False)


async def _drop_database(server_url: str, name: str) -> None:
    import asyncpg

    url = make_url(server_url)
    conn = await asyncpg.connect(
        host=url.host, port=url.port, user=url.username, password=url.password, database=url.database
    )
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def pg_url(postgres_server_url: str) -> AsyncIterator[str]:
    """A fresh, migrated PostgreSQL database for one test, dropped afterwards."""
    name = f"mr_test_{uuid.uuid4().hex[:12]}"
    url = await _create_database(postgres_server_url, name)
    await migrate(url)
    yield url
    await _drop_database(postgres_server_url, name)


@pytest.fixture
async def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'mr.db'}"
    await migrate(url)
    return url


@dataclass
class KafkaEnv:
    bootstrap: str
    prefix: str

    def settings(self, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "bus": BusKind.KAFKA,
            "kafka_bootstrap_servers": self.bootstrap,
            "topic_prefix": self.prefix,
            "producer_linger_ms": 5,
        }
        values.update(overrides)
        return Settings().model_copy(update=values)


@pytest.fixture
def kafka(kafka_bootstrap: str) -> KafkaEnv:
    """The broker, with a topic prefix of this test's own so that tests never see each other's data."""
    return KafkaEnv(bootstrap=kafka_bootstrap, prefix=f"t{uuid.uuid4().hex[:10]}.")


@pytest.fixture
def stop_event() -> Iterator[asyncio.Event]:
    event = asyncio.Event()
    yield event
    event.set()
