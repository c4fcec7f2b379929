"""SCRAM users on the broker (KIP-554), made by the admin principal: create or change a user's password,
delete a user, list them. The salted password is computed here (RFC 5802: PBKDF2 with the mechanism's
hash), so the password itself never travels, not even to the broker.

Passwords come from files, one per user, named after it: how a Kubernetes Secret mounted as a volume
looks, and what deploy/local/kafka.sh keeps.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from shared.errors import ConfigError
from shared.kafkaacl import admin_client, send
from shared.kafkaproto import AlterScramCredentials, DescribeScramCredentials, ScramMechanism
from shared.settings import KafkaSaslMechanism, Settings

# Kafka's minimum for SCRAM is 4096 iterations; its tools default to 4096, OWASP asks more of SHA-512.
ITERATIONS = 8192
_HASHES = {ScramMechanism.SCRAM_SHA_256: "sha256", ScramMechanism.SCRAM_SHA_512: "sha512"}
_RESOURCE_NOT_FOUND = 91


@dataclass(frozen=True, order=True)
class ScramUser:
    name: str
    mechanisms: tuple[str, ...]


def mechanism(settings: Settings) -> ScramMechanism:
    if settings.kafka_sasl_mechanism is KafkaSaslMechanism.SCRAM_SHA_256:
        return ScramMechanism.SCRAM_SHA_256
    return ScramMechanism.SCRAM_SHA_512


def salted_password(password: str, salt: bytes, *, iterations: int, which: ScramMechanism) -> bytes:
    return hashlib.pbkdf2_hmac(_HASHES[which], password.encode("utf-8"), salt, iterations)


def read_passwords(directory: Path) -> dict[str, str]:
    """user -> password, from one file per user (hidden files, such as a Secret volume's `..data`
    links, left out)."""
    if not directory.is_dir():
        raise ConfigError(f"{directory} is not a directory of password files (one per user)")
    out: dict[str, str] = {}
    for path in sorted(directory.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        password = path.read_text(encoding="utf-8").rstrip("\r\n")
        if not password:
            raise ConfigError(f"the password file {path} is empty")
        out[path.name] = password
    return out


def generate_passwords(directory: Path, names: list[str]) -> list[str]:
    """A random password file (mode 0600) for each of `names` that has none; the names generated."""
    directory.mkdir(parents=True, exist_ok=True)
    made = []
    for name in names:
        path = directory / name
        if path.exists():
            continue
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(secrets.token_urlsafe(24) + "\n")
        made.append(name)
    return made


async def set_passwords(settings: Settings, passwords: dict[str, str]) -> None:
    """Create each user, or replace its password (connections already open stay logged in)."""
    which = mechanism(settings)
    upsertions = []
    for user, password in passwords.items():
        salt = secrets.token_bytes(32)
        upsertions.append(
            (
                user,
                which,
                ITERATIONS,
                salt,
                salted_password(password, salt, iterations=ITERATIONS, which=which),
            )
        )
    await _alter(settings, AlterScramCredentials(upsertions=upsertions))


async def delete_users(settings: Settings, names: list[str]) -> None:
    await _alter(settings, AlterScramCredentials(deletions=[(n, mechanism(settings)) for n in names]))


async def _alter(settings: Settings, request: AlterScramCredentials) -> None:
    admin = admin_client(settings, "users")
    await admin.start()
    try:
        # The controller applies SCRAM changes; any broker forwards them.
        response = await send(admin, request)
    finally:
        await admin.close()
    failed = [
        f"{user}: error {code} {message or ''}".strip() for user, code, message, _ in response.results if code
    ]
    if failed:
        raise RuntimeError("the broker refused SCRAM changes: " + "; ".join(failed))


async def list_users(settings: Settings) -> list[ScramUser]:
    admin = admin_client(settings, "users")
    await admin.start()
    try:
        response = await send(admin, DescribeScramCredentials())
    finally:
        await admin.close()
    if response.error_code and response.error_code != _RESOURCE_NOT_FOUND:
        raise RuntimeError(
            f"DescribeUserScramCredentials: error {response.error_code} {response.error_message}"
        )
    return sorted(
        ScramUser(user, tuple(ScramMechanism(c[0]).name.replace("_", "-") for c in infos))
        for user, code, _message, infos, _tags in response.results or []
        if not code
    )
