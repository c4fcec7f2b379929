"""Kafka security without a broker: the client options the settings give, the password kept out of
every text, the ACL model (shared/kafkaacl.py) and `mention-router kafka acls`. The broker's enforcement
is tested in tests/integration/test_kafka_security*.py."""

from __future__ import annotations

import io
import logging
import ssl
from pathlib import Path

import pytest

from services.api.webhook_worker.fanout import STAGE as WEBHOOK_STAGE
from services.cli import _parser
from services.cli import kafka as kafka_cli
from shared import kafkaacl
from shared.errors import ConfigError
from shared.kafkaauth import client_options, principal
from shared.kafkaproto import Operation, PatternType, ResourceType, allowed
from shared.settings import DEPARTMENTS, KafkaSecurityProtocol, Settings

SECRET = "hunter2-correct-horse"


def _settings(**values: object) -> Settings:
    return Settings().model_copy(update=values)


def _sasl(tmp_path: Path, **values: object) -> Settings:
    (tmp_path / "pw").write_text(SECRET + "\n")
    base: dict[str, object] = {
        "kafka_security_protocol": KafkaSecurityProtocol.SASL_SSL,
        "kafka_sasl_username": "mr-router",
        "kafka_sasl_password_file": tmp_path / "pw",
    }
    return _settings(**(base | values))


def test_plaintext_adds_nothing_to_the_clients() -> None:
    assert client_options(_settings()) == {}
    assert principal(_settings()) == "User:ANONYMOUS"


def test_sasl_ssl_logs_in_with_the_file_password_over_verified_tls(tmp_path: Path) -> None:
    options = client_options(_sasl(tmp_path))
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "mr-router"
    assert options["sasl_plain_password"] == SECRET, "the file's trailing newline is not part of it"
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname


def test_sasl_plaintext_has_no_tls(tmp_path: Path) -> None:
    options = client_options(_sasl(tmp_path, kafka_security_protocol=KafkaSecurityProtocol.SASL_PLAINTEXT))
    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert "ssl_context" not in options


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"kafka_sasl_username": ""}, "MR_KAFKA_SASL_USERNAME"),
        ({"kafka_sasl_password_file": None}, "needs the password of User:mr-router"),
        ({"kafka_sasl_password_file": Path("/nonexistent/pw")}, "/nonexistent/pw"),
        ({"kafka_sasl_password": SECRET}, "not both"),
        ({"kafka_ssl_cafile": Path("/nonexistent/ca.crt")}, "MR_KAFKA_SSL_CAFILE /nonexistent/ca.crt"),
    ],
    ids=["no-user", "no-password", "missing-password-file", "password-twice", "missing-ca"],
)
def test_an_incomplete_sasl_configuration_is_a_clear_config_error(
    tmp_path: Path, values: dict[str, object], says: str
) -> None:
    settings = _sasl(tmp_path, **values)
    with pytest.raises(ConfigError) as error:
        client_options(settings)
    assert says in str(error.value)
    assert SECRET not in str(error.value)


def test_an_empty_password_file_is_refused(tmp_path: Path) -> None:
    settings = _sasl(tmp_path)
    (tmp_path / "pw").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        client_options(settings)


def test_the_password_never_shows(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("MR_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("MR_KAFKA_SASL_USERNAME", "mr-api")
    monkeypatch.setenv("MR_KAFKA_SASL_PASSWORD", SECRET)
    settings = Settings()
    assert settings.kafka_sasl_password is not None
    assert settings.kafka_sasl_password.get_secret_value() == SECRET
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("mention_router").info("settings: %s", settings)
    for text in (
        repr(settings),
        str(settings),
        settings.model_dump_json(),
        str(settings.model_dump()),
        caplog.text,
    ):
        assert SECRET not in text


# --- the ACL model -------------------------------------------------------------------------------------


def test_every_topic_is_written_by_a_service_and_every_service_writes_the_dlq() -> None:
    settings = _settings(topic_prefix="t1.")
    access = {s: kafkaacl.service_access(settings, s) for s in kafkaacl.SERVICES}
    written = {t for a in access.values() for t in a.writes}
    assert written == set(settings.all_topics())
    assert all(settings.topic_dlq in a.writes for a in access.values())
    assert access["ingest"].reads == () and access["ingest"].groups == ()


def test_a_department_reads_its_own_topic_and_nothing_else() -> None:
    settings = _settings(topic_prefix="t1.")
    for department in DEPARTMENTS:
        access = kafkaacl.department_access(settings, department)
        assert access.reads == (settings.topic_routed(department),)
        assert access.writes == () and access.groups == () and access.transactional_prefixes == ()
        assert access.group_prefixes == (f"t1.{department}.",)
    prefixes = [kafkaacl.department_group_prefix(settings, d) for d in DEPARTMENTS]
    for a in prefixes:
        for b in prefixes:
            assert a == b or not b.startswith(a), f"{a!r} would let its department use {b!r}'s groups"


def test_the_api_group_is_the_webhook_fanouts() -> None:
    assert kafkaacl.WEBHOOK_GROUP == WEBHOOK_STAGE


@pytest.mark.parametrize("exactly_once", [False, True])
def test_only_the_exactly_once_classifier_gets_transactional_ids(exactly_once: bool) -> None:
    settings = _settings(exactly_once=exactly_once)
    txn = [b for b in kafkaacl.bindings(settings) if b.resource is ResourceType.TRANSACTIONAL_ID]
    if not exactly_once:
        assert txn == []
        return
    assert len(txn) == 1
    (binding,) = txn
    assert binding.principal == "User:mr-classifier"
    assert binding.pattern is PatternType.PREFIXED and binding.operation is Operation.WRITE
    assert binding.name == f"{settings.kafka_client_id}.{settings.group('classifier')}."


def test_every_binding_carries_the_topic_prefix() -> None:
    settings = _settings(topic_prefix="tenant7.", exactly_once=True)
    for b in kafkaacl.bindings(settings):
        assert b.name.startswith("tenant7.") or b.name.startswith("mention-router.tenant7."), b


def test_a_user_left_empty_gets_no_acls() -> None:
    settings = _settings(kafka_department_users={"pr": "pr-desk"}, kafka_service_users={"router": "r"})
    assert {b.principal for b in kafkaacl.bindings(settings)} == {"User:pr-desk", "User:r"}
    assert kafkaacl.users(settings) == ["r", "pr-desk"]


def test_authorized_operations_bits() -> None:
    read_describe = (1 << Operation.READ) | (1 << Operation.DESCRIBE)
    assert allowed(read_describe, Operation.READ)
    assert not allowed(read_describe, Operation.WRITE)
    assert not allowed(-(2**31), Operation.READ), "the broker's 'not asked' value grants nothing"


# --- `mention-router kafka acls` -----------------------------------------------------------------------


def _acls(*argv: str) -> str:
    args = _parser().parse_args(["kafka", "acls", *argv])
    out = io.StringIO()
    assert kafka_cli.run(_settings(), args, out=out) == 0
    return out.getvalue()


def test_kafka_acls_prints_the_whole_set() -> None:
    lines = _acls().splitlines()
    assert len(lines) == len(kafkaacl.bindings(_settings()))
    assert "User:mr-ingest: WRITE TOPIC mentions.raw" in lines
    assert "User:dept-pr: READ TOPIC mentions.routed.pr" in lines
    assert "User:dept-pr: READ GROUP pr. (prefix)" in lines


def test_kafka_acls_for_one_department_user() -> None:
    assert _acls("--department-user", "pr=pr-crisis-desk", "--principal", "pr-crisis-desk").splitlines() == [
        "User:pr-crisis-desk: READ TOPIC mentions.routed.pr",
        "User:pr-crisis-desk: READ GROUP pr. (prefix)",
    ]


@pytest.mark.parametrize("item", ["legal=x", "pr", "pr="])
def test_kafka_acls_refuses_an_unknown_department(item: str) -> None:
    with pytest.raises(ConfigError, match="DEPARTMENT=USER"):
        _acls("--department-user", item)
