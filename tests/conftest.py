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
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# API keys are on by default (MR_API_AUTH); the tests about keys and scopes turn them on explicitly
# (tests/integration/test_api_security.py, and the multi-process end-to-end test), the others test the
# rest of the API without them.
os.environ.setdefault("MR_API_AUTH", "false")
# The default classifier is the cascade over the model (models/minilm-v3.npz). The tests of delivery,
# storage and the API run the rules engine: labels that the test feeds are written for (each entry says
# which departments it must reach) and ~40x cheaper, so 5,000-mention fault runs take seconds. The default
# engine has tests of its own: through the embedded stack as `make run` starts it
# (tests/e2e/test_embedded_examples.py), the classifier service on Kafka (test_classifier_kafka.py), the
# command line (test_classify_batch.py), the service refusing a broken model, and the engine itself
# (tests/unit/test_learned_engine.py); the quick bench in `make test` runs it through the pipeline.
os.environ.setdefault("MR_CLASSIFIER_ENGINE", "rules")
# Every app a test builds would try to bind the default metrics port 9100; the metrics tests set their own.
os.environ.setdefault("MR_METRICS_PORT", "0")

from bench.infra import create_database, delete_topics, drop_database, script_env
from devsupport.feedserver import FeedServer, feed_server
from devsupport.securekafka import secure_broker, secure_kafka  # noqa: F401 - fixtures
from shared.db import migrate
from shared.settings import BusKind, Settings


def _docker_available() -> bool:
    """A Docker engine answers /_ping (asked over a socket of our own: the docker client leaves its
    socket open when the engine is missing, which pytest turns into an error in whichever test runs next)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: str | tuple[str, int] = host.removeprefix("unix://")
        elif host.startswith("tcp://"):
            name, _, port = host.removeprefix("tcp://").partition(":")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            address = (name, int(port or 2375))
        else:
            return False
        with sock:
            sock.settimeout(3)
            sock.connect(address)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            status = sock.recv(64)
            return status.startswith(b"HTTP/1.") and b" 200 " in status
    except OSError:
        return False


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
    yield script_env("kafka.sh")["MR_KAFKA_BOOTSTRAP_SERVERS"]


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
    yield script_env("postgres.sh")["MR_DATABASE_URL"]


@pytest.fixture
async def pg_url(postgres_server_url: str) -> AsyncIterator[str]:
    """A fresh, migrated PostgreSQL database for one test, dropped afterwards."""
    name = f"mr_test_{uuid.uuid4().hex[:12]}"
    url = await create_database(postgres_server_url, name)
    await migrate(url)
    yield url
    await drop_database(postgres_server_url, name)


@pytest.fixture
async def empty_pg_url(postgres_server_url: str) -> AsyncIterator[str]:
    """A fresh PostgreSQL database with no schema (the test migrates it as a user would), dropped after."""
    name = f"mr_empty_{uuid.uuid4().hex[:12]}"
    url = await create_database(postgres_server_url, name)
    yield url
    await drop_database(postgres_server_url, name)


@pytest.fixture
def server() -> Iterator[FeedServer]:
    """A local HTTP server for test feeds: the stand-in for the outside internet."""
    with feed_server() as fs:
        yield fs


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
async def kafka(kafka_bootstrap: str) -> AsyncIterator[KafkaEnv]:
    """The broker, with a topic prefix of this test's own so that tests never see each other's data.
    The test's topics are deleted afterwards: a full run makes thousands of partitions, more than a
    small broker's heap holds."""
    env = KafkaEnv(bootstrap=kafka_bootstrap, prefix=f"t{uuid.uuid4().hex[:10]}.")
    yield env
    await delete_topics(kafka_bootstrap, env.prefix)


@pytest.fixture
def stop_event() -> Iterator[asyncio.Event]:
    event = asyncio.Event()
    yield event
    event.set()
