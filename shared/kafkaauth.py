"""Who a Kafka client is: the security options every aiokafka client of the services gets from the
settings, and a first login checked before anything else, so that wrong credentials stop a process at
once with the principal named (aiokafka's own bootstrap logs the refusal and reports only "Unable to
bootstrap", which a service would take for a broker not up yet and retry forever).

The password comes from `MR_KAFKA_SASL_PASSWORD` or is read from `MR_KAFKA_SASL_PASSWORD_FILE` each time
a client is made (a rotated Secret applies on the next connection); it is never logged nor put in an
error message.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

from shared.errors import ConfigError
from shared.settings import KafkaSecurityProtocol, Settings

log = logging.getLogger(__name__)


class KafkaAuthenticationFailed(ConfigError):
    """The broker refused this process's login (user, password, mechanism or TLS trust)."""


class KafkaAccessDenied(ConfigError):
    """The broker's ACLs do not allow this principal something its service needs."""


def sasl_enabled(settings: Settings) -> bool:
    return settings.kafka_security_protocol is not KafkaSecurityProtocol.PLAINTEXT


def principal(settings: Settings) -> str:
    """The principal the broker sees for this process, as ACLs name it."""
    return f"User:{settings.kafka_sasl_username}" if sasl_enabled(settings) else "User:ANONYMOUS"


def _password(settings: Settings) -> str:
    path = settings.kafka_sasl_password_file
    if path is not None:
        if settings.kafka_sasl_password is not None:
            raise ConfigError("set MR_KAFKA_SASL_PASSWORD or MR_KAFKA_SASL_PASSWORD_FILE, not both")
        try:
            password = path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(
                f"cannot read the Kafka password of {principal(settings)} from MR_KAFKA_SASL_PASSWORD_FILE "
                f"{path}: {exc.strerror or exc}"
            ) from None
        if not password:
            raise ConfigError(f"MR_KAFKA_SASL_PASSWORD_FILE {path} is empty")
        return password
    if settings.kafka_sasl_password is None or not settings.kafka_sasl_password.get_secret_value():
        raise ConfigError(
            f"{settings.kafka_security_protocol.value} needs the password of {principal(settings)}: "
            "set MR_KAFKA_SASL_PASSWORD_FILE (or MR_KAFKA_SASL_PASSWORD)"
        )
    return settings.kafka_sasl_password.get_secret_value()


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """TLS that verifies the brokers' certificates and names, against MR_KAFKA_SSL_CAFILE if set."""
    cafile = settings.kafka_ssl_cafile
    try:
        return ssl.create_default_context(cafile=str(cafile) if cafile is not None else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the Kafka CA file MR_KAFKA_SSL_CAFILE {cafile}: {exc}") from None


def client_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments that make an aiokafka client (producer, consumer, admin, bare client) log
    in as this process's principal; none for PLAINTEXT."""
    protocol = settings.kafka_security_protocol
    if protocol is KafkaSecurityProtocol.PLAINTEXT:
        return {}
    if not settings.kafka_sasl_username:
        raise ConfigError(f"{protocol.value} needs a Kafka user: set MR_KAFKA_SASL_USERNAME")
    options: dict[str, Any] = {
        "security_protocol": protocol.value,
        "sasl_mechanism": settings.kafka_sasl_mechanism.value,
        "sasl_plain_username": settings.kafka_sasl_username,
        "sasl_plain_password": _password(settings),
    }
    if protocol is KafkaSecurityProtocol.SASL_SSL:
        options["ssl_context"] = ssl_context(settings)
    return options


def _hosts(settings: Settings) -> list[tuple[str, int]]:
    out = []
    for item in settings.kafka_bootstrap_servers.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"MR_KAFKA_BOOTSTRAP_SERVERS: expected host:port, got {item.strip()!r}")
        out.append((host.strip("[]"), int(port)))
    return out


async def authenticate(settings: Settings) -> None:
    """Log in to one bootstrap broker and leave. A refusal raises KafkaAuthenticationFailed (not
    retriable: the process stops); a broker that cannot be reached raises a retriable error."""
    if not sasl_enabled(settings):
        return
    from aiokafka.conn import create_conn
    from aiokafka.errors import (
        IllegalSaslStateError,
        KafkaError,
        SaslAuthenticationFailed,
        UnsupportedSaslMechanismError,
    )

    options = client_options(settings)
    last: BaseException | None = None
    for host, port in _hosts(settings):
        try:
            conn = await create_conn(host, port, request_timeout_ms=10_000, **options)
        except ssl.SSLError as exc:
            raise KafkaAuthenticationFailed(
                f"TLS with the Kafka broker {host}:{port} failed ({exc.reason or exc}) for "
                f"{principal(settings)}: is it a SASL_SSL listener, and is its certificate signed by a CA "
                "in MR_KAFKA_SSL_CAFILE (or the system's) for that name?"
            ) from None
        except (SaslAuthenticationFailed, UnsupportedSaslMechanismError, IllegalSaslStateError) as exc:
            # "These credentials will never work", not "not now".
            raise KafkaAuthenticationFailed(
                f"the Kafka broker {host}:{port} refused the login of {principal(settings)} "
                f"({settings.kafka_sasl_mechanism.value} over {settings.kafka_security_protocol.value}): "
                f"{_broker_message(exc)}. Check MR_KAFKA_SASL_USERNAME and the password "
                "(MR_KAFKA_SASL_PASSWORD_FILE or MR_KAFKA_SASL_PASSWORD)"
            ) from None
        except (OSError, TimeoutError, KafkaError) as exc:
            last = exc
            continue
        conn.close()
        return
    assert last is not None
    raise last


def _broker_message(exc: BaseException) -> str:
    # aiokafka's text starts with "[Error 58] SaslAuthenticationFailed: "; the broker's reason follows.
    text = str(exc)
    return text.split(": ", 1)[1] if ": " in text else text
