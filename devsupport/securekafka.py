"""The secured broker for the security tests: SASL/SCRAM, TLS and ACLs enforced by the broker itself.

deploy/local/kafka.sh starts it (MR_KAFKA_SECURE=1, beside the plaintext broker the other tests use) with
the services' and departments' users; each test gets a topic prefix of its own with the ACLs of that
prefix (shared/kafkaacl.py, as `mention-router kafka acls --apply` makes them), removed afterwards with
the topics. A broker that cannot be started fails the tests that need it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from shared import kafkaacl, kafkausers
from shared.kafkaauth import KafkaAuthenticationFailed, authenticate, client_options
from shared.settings import REPO_ROOT, BusKind, KafkaSecurityProtocol, Settings

SCRIPT = REPO_ROOT / "deploy" / "local" / "kafka.sh"
ADMIN = "admin"


def start_secured_broker() -> dict[str, str]:
    """Start the secured broker (idempotent) and return what `kafka.sh env` exports."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MR_")}
    env["MR_KAFKA_SECURE"] = "1"
    started = subprocess.run([str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=600)
    if started.returncode != 0:
        raise RuntimeError(f"the secured Kafka broker did not start:\n{started.stdout}\n{started.stderr}")
    out = subprocess.run([str(SCRIPT), "env"], env=env, check=True, capture_output=True, text=True).stdout
    exported: dict[str, str] = {}
    for line in out.splitlines():
        if line.startswith("export ") and "=" in line:
            key, value = line.removeprefix("export ").split("=", 1)
            exported[key] = value
    return exported


@dataclass
class SecureBroker:
    ssl_bootstrap: str
    sasl_plaintext_bootstrap: str
    cafile: Path
    users_dir: Path

    @classmethod
    def from_env(cls, env: dict[str, str]) -> SecureBroker:
        return cls(
            ssl_bootstrap=env["MR_KAFKA_BOOTSTRAP_SERVERS"],
            sasl_plaintext_bootstrap=env["KAFKA_SASL_PLAINTEXT_SERVERS"],
            cafile=Path(env["MR_KAFKA_SSL_CAFILE"]),
            users_dir=Path(env["KAFKA_USERS_DIR"]),
        )


@dataclass
class SecureKafka:
    """One test's view of the secured broker: its topic prefix, settings for any user."""

    broker: SecureBroker
    prefix: str = field(default_factory=lambda: f"s{uuid.uuid4().hex[:10]}.")
    granted: list[kafkaacl.Binding] = field(default_factory=list)
    made_users: list[str] = field(default_factory=list)

    def settings(
        self, user: str = ADMIN, *, tls: bool = True, password_file: Path | None = None, **overrides: object
    ) -> Settings:
        """Settings of a process logged in as `user` (its password file from kafka.sh unless given), over
        TLS (SASL_SSL) or not (SASL_PLAINTEXT)."""
        values: dict[str, object] = {
            "bus": BusKind.KAFKA,
            "kafka_bootstrap_servers": self.broker.ssl_bootstrap
            if tls
            else self.broker.sasl_plaintext_bootstrap,
            "kafka_security_protocol": KafkaSecurityProtocol.SASL_SSL
            if tls
            else KafkaSecurityProtocol.SASL_PLAINTEXT,
            "kafka_sasl_username": user,
            "kafka_sasl_password": None,
            "kafka_sasl_password_file": password_file or self.broker.users_dir / user,
            "kafka_ssl_cafile": self.broker.cafile,
            "topic_prefix": self.prefix,
            "producer_linger_ms": 5,
        }
        values.update(overrides)
        return Settings().model_copy(update=values)

    @property
    def admin(self) -> Settings:
        return self.settings(ADMIN)

    def security(self, user: str = ADMIN) -> dict[str, Any]:
        """aiokafka keyword arguments for a client logged in as `user` (devsupport/kafka.py takes them)."""
        return client_options(self.settings(user))

    async def grant(self, bindings: list[kafkaacl.Binding]) -> None:
        """Create these ACLs (removed after the test), and wait until the broker describes them: its
        authorizer learns them from the metadata log, a moment after the controller has them."""
        await kafkaacl.apply(self.admin, bindings)
        self.granted += bindings
        admin = kafkaacl.admin_client(self.admin, "test")
        await admin.start()
        try:
            deadline = time.monotonic() + 15
            while not set(bindings) <= await kafkaacl.existing(admin, {b.principal for b in bindings}):
                if time.monotonic() > deadline:
                    raise AssertionError("the broker did not apply the ACLs within 15 s")
                await asyncio.sleep(0.1)
        finally:
            await admin.close()

    async def make_user(self, name: str, directory: Path) -> Path:
        """A SCRAM user of this test's own (deleted after it); its password file."""
        path = directory / name
        path.write_text(uuid.uuid4().hex)
        await kafkausers.set_passwords(self.admin, {name: path.read_text()})
        self.made_users.append(name)
        settings = self.settings(name, password_file=path)
        deadline = time.monotonic() + 15
        while True:  # the credential, too, reaches the broker through the metadata log
            try:
                await authenticate(settings)
                return path
            except KafkaAuthenticationFailed:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def cleanup(self) -> None:
        await kafkaacl.remove(self.admin, self.granted)
        if self.made_users:
            await kafkausers.delete_users(self.admin, self.made_users)
        admin = AIOKafkaAdminClient(bootstrap_servers=self.broker.ssl_bootstrap, **self.security())
        await admin.start()
        try:
            topics = [t for t in await admin.list_topics() if t.startswith(self.prefix)]
            if topics:
                await admin.delete_topics(topics)
        finally:
            await admin.close()


@pytest.fixture(scope="session")
def secure_broker() -> SecureBroker:
    return SecureBroker.from_env(start_secured_broker())


@pytest.fixture
async def secure_kafka(secure_broker: SecureBroker) -> AsyncIterator[SecureKafka]:
    """The secured broker with every service's and department's ACLs for this test's topic prefix."""
    env = SecureKafka(secure_broker)
    await env.grant(kafkaacl.bindings(env.admin))
    yield env
    await env.cleanup()
