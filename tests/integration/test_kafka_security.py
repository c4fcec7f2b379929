"""Kafka security on a broker that enforces it (deploy/local/kafka.sh, MR_KAFKA_SECURE=1): SCRAM logins
over TLS, the standard authorizer denying what no ACL allows, the ACLs of shared/kafkaacl.py.

A department's consumer reads its own topic and nothing else; a service with a wrong password stops at
once naming its principal; a service missing one ACL says which resource and operation; the exactly-once
classifier works with its transactional-id ACL. The whole pipeline is in test_kafka_security_pipeline.py.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import GroupAuthorizationFailedError, TopicAuthorizationFailedError
from aiokafka.structs import ConsumerRecord

from devsupport.factories import classified_event
from devsupport.kafka import group_lag, read_topics
from devsupport.processes import free_port
from devsupport.scenario import wait_for
from devsupport.securekafka import SecureKafka
from services.classifier.bootstrap import build as build_classifier
from shared import kafkaacl
from shared.bus.base import OutMessage
from shared.bus.codec import encode
from shared.bus.kafka import KafkaBus
from shared.events import MentionIngested
from shared.kafkaauth import KafkaAccessDenied, client_options
from shared.kafkaproto import Operation, ResourceType
from shared.settings import DEPARTMENTS, REPO_ROOT, Settings
from shared.topics import create_topics

pytestmark = pytest.mark.kafka


async def _consume(
    settings: Settings, topic: str, group: str, *, want: int, within: float = 20.0
) -> list[str]:
    """As a department's own consumer would: subscribe with a consumer group, read, commit. The keys."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **client_options(settings),
    )
    try:
        await consumer.start()
        keys: list[str] = []
        deadline = time.monotonic() + within
        while len(keys) < want and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            records: list[ConsumerRecord[bytes, bytes]] = [r for rs in batch.values() for r in rs]
            keys += [r.key.decode() for r in records if r.key is not None]
        await consumer.commit()
        return keys
    finally:
        await consumer.stop()


async def _one_per_department(secure_kafka: SecureKafka) -> None:
    admin = secure_kafka.admin
    await create_topics(admin)
    bus = KafkaBus(secure_kafka.settings("mr-router"))
    await bus.start()
    try:
        await bus.send(
            [OutMessage(topic=admin.topic_routed(d), key=f"for-{d}", value=b"{}") for d in DEPARTMENTS]
        )
    finally:
        await bus.stop()


@pytest.mark.parametrize(
    ("topic_of", "group_of", "tls", "refused"),
    [
        ("support", "support", True, None),
        ("support", "support", False, None),  # SASL_PLAINTEXT: the same principal, the same ACLs
        ("pr", "support", True, TopicAuthorizationFailedError),
        ("rnd", "support", True, TopicAuthorizationFailedError),
        ("support", "pr", True, GroupAuthorizationFailedError),
        # `product.` is not `pr.`: a prefix ACL ends with the dot
        ("pr", "product", True, TopicAuthorizationFailedError),
    ],
    ids=[
        "own-topic",
        "own-topic-sasl-plaintext",
        "pr-topic",
        "rnd-topic",
        "pr-group",
        "product-group-pr-topic",
    ],
)
async def test_a_department_reads_only_its_own_topic(
    secure_kafka: SecureKafka, topic_of: str, group_of: str, tls: bool, refused: type[Exception] | None
) -> None:
    await _one_per_department(secure_kafka)
    settings = secure_kafka.settings("dept-support", tls=tls)
    topic = settings.topic_routed(topic_of)
    group = f"{settings.topic_prefix}{group_of}.desk-tool"
    if refused is None:
        assert await _consume(settings, topic, group, want=1) == [f"for-{topic_of}"]
        return
    with pytest.raises(refused):
        await _consume(settings, topic, group, want=1, within=10)


async def test_the_admin_reads_every_topic(secure_kafka: SecureKafka) -> None:
    """The control for the refusals above: the records are there."""
    await _one_per_department(secure_kafka)
    admin = secure_kafka.admin
    records = await read_topics(
        admin.kafka_bootstrap_servers, [admin.topic_routed(d) for d in DEPARTMENTS], **secure_kafka.security()
    )
    assert sorted(r.key.decode() for r in records if r.key) == sorted(f"for-{d}" for d in DEPARTMENTS)


@pytest.mark.parametrize("service", ["classifier", "api"])
async def test_a_wrong_password_stops_the_service_at_start_naming_the_principal(
    secure_kafka: SecureKafka, tmp_path: Path, service: str
) -> None:
    secret = f"not-the-password-{uuid.uuid4().hex[:8]}"
    (tmp_path / "password").write_text(secret)
    settings = secure_kafka.settings(f"mr-{service}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MR_")} | {
        "MR_BUS": "kafka",
        "MR_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "MR_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "MR_KAFKA_SASL_USERNAME": f"mr-{service}",
        "MR_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "password"),
        "MR_KAFKA_SSL_CAFILE": str(settings.kafka_ssl_cafile),
        "MR_TOPIC_PREFIX": settings.topic_prefix,
        "MR_CLASSIFIER_ENGINE": "rules",
        "MR_METRICS_PORT": "0",
        "MR_API_PORT": str(free_port()),
        "MR_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'api.db'}",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        f"services.{service}",
        cwd=REPO_ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        # A generous bound that only proves "no retry loop": it takes about a second.
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"{service} kept running with a wrong password") from None
    text = out.decode(errors="replace")
    assert proc.returncode == 2, text
    assert f"refused the login of User:mr-{service}" in text, text
    assert "SCRAM-SHA-512 over SASL_SSL" in text
    assert secret not in text, "the password was logged"


# (service, exactly-once, the ACL left out: operation, resource type, name without the prefix)
MISSING = [
    ("ingest", False, Operation.WRITE, ResourceType.TOPIC, "mentions.raw"),
    ("ingest", False, Operation.WRITE, ResourceType.TOPIC, "mentions.dlq"),
    ("classifier", False, Operation.READ, ResourceType.TOPIC, "mentions.raw"),
    ("classifier", False, Operation.WRITE, ResourceType.TOPIC, "mentions.classified"),
    ("classifier", False, Operation.READ, ResourceType.GROUP, "mention-router.classifier"),
    ("classifier", True, Operation.WRITE, ResourceType.TRANSACTIONAL_ID, "its transactional ids"),
    ("router", False, Operation.WRITE, ResourceType.TOPIC, "mentions.routed.pr"),
    ("router", False, Operation.WRITE, ResourceType.TOPIC, "mentions.alerts"),
    ("api", False, Operation.READ, ResourceType.TOPIC, "mentions.routed.support"),
    ("api", False, Operation.READ, ResourceType.GROUP, "mention-router.webhooks"),
]
_KIND = {
    ResourceType.TOPIC: "topic",
    ResourceType.GROUP: "consumer group",
    ResourceType.TRANSACTIONAL_ID: "transactional id",
}


@pytest.mark.parametrize(
    ("service", "exactly_once", "operation", "resource", "name"),
    MISSING,
    ids=[f"{m[0]}-{m[2].name}-{m[4]}" for m in MISSING],
)
async def test_a_service_missing_one_acl_says_which_resource_and_operation(
    secure_kafka: SecureKafka,
    tmp_path: Path,
    service: str,
    exactly_once: bool,
    operation: Operation,
    resource: ResourceType,
    name: str,
) -> None:
    user = f"t-{uuid.uuid4().hex[:10]}"
    password = await secure_kafka.make_user(user, tmp_path)
    settings = secure_kafka.settings(user, password_file=password, exactly_once=exactly_once)
    await create_topics(secure_kafka.admin)
    full = kafkaacl.access_bindings(user, kafkaacl.service_access(settings, service))
    if resource is ResourceType.TRANSACTIONAL_ID:
        full_name = kafkaacl.transactional_prefix(settings, settings.group("classifier"))
    else:
        full_name = settings.topic_prefix + name
    left_out = [b for b in full if (b.resource, b.name, b.operation) == (resource, full_name, operation)]
    assert len(left_out) == 1, full
    await secure_kafka.grant([b for b in full if b not in left_out])

    bus = KafkaBus(settings)
    await bus.start()
    try:
        with pytest.raises(KafkaAccessDenied) as denied:
            await bus.verify_access(service)
    finally:
        await bus.stop()
    message = str(denied.value)
    assert f"Kafka denies User:{user} {operation.name} on {_KIND[resource]}" in message, message
    assert repr(full_name)[:-1] in message, message

    # With that ACL too, the same check passes: the one left out was the only thing missing.
    await secure_kafka.grant(left_out)
    bus = KafkaBus(settings)
    await bus.start()
    try:
        await bus.verify_access(service)
    finally:
        await bus.stop()


async def test_the_exactly_once_classifier_works_with_its_transactional_id_acl(
    secure_kafka: SecureKafka,
) -> None:
    settings = secure_kafka.settings("mr-classifier", exactly_once=True)
    # The default grant of the fixture is without exactly-once: the transactional-id ACL is added here.
    added = [
        b
        for b in kafkaacl.access_bindings("mr-classifier", kafkaacl.service_access(settings, "classifier"))
        if b.resource is ResourceType.TRANSACTIONAL_ID
    ]
    assert len(added) == 1
    await secure_kafka.grant(added)
    await create_topics(secure_kafka.admin)
    mentions = [classified_event(i).mention for i in range(20)]
    ingest = KafkaBus(secure_kafka.settings("mr-ingest"))
    await ingest.start()
    try:
        await ingest.send(
            [
                encode(topic=settings.topic_raw, key=m.id, event=MentionIngested(mention=m), source="/t")
                for m in mentions
            ]
        )
    finally:
        await ingest.stop()

    bus = KafkaBus(settings)
    await bus.start()
    stop = asyncio.Event()
    try:
        await bus.verify_access("classifier")
        task = asyncio.create_task(build_classifier(settings, bus=bus).run(stop))
        security = secure_kafka.security()

        async def committed() -> bool:
            lag = await group_lag(
                settings.kafka_bootstrap_servers, settings.group("classifier"), settings.topic_raw, **security
            )
            return lag == 0

        await wait_for(committed, within=60, what="the classifier's transactions")
        stop.set()
        await asyncio.wait_for(task, 30)
    finally:
        stop.set()
        await bus.stop()
    assert sorted(await _read_committed(secure_kafka.admin, settings.topic_classified)) == sorted(
        m.id for m in mentions
    )


async def _read_committed(settings: Settings, topic: str) -> list[str]:
    """The keys a read_committed consumer sees in `topic`, read to its end (past the transactions'
    commit markers, which no consumer is given)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        **client_options(settings),
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        keys: list[str] = []
        deadline = time.monotonic() + 30
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            batch = await consumer.getmany(timeout_ms=300)
            keys += [r.key.decode() for rs in batch.values() for r in rs if r.key is not None]
        return keys
    finally:
        await consumer.stop()


@pytest.mark.parametrize(
    ("user", "topic_of"),
    [("mr-api", "support"), ("mr-ingest", "pr")],
    ids=["readable-not-writable", "not-even-described"],
)
async def test_a_send_the_acls_refuse_names_the_principal_topic_and_operation(
    secure_kafka: SecureKafka, user: str, topic_of: str
) -> None:
    """Past the check at start (an ACL removed while a service runs): the send fails with the same
    clear error, which stops the stage rather than dead-lettering or retrying its batch."""
    await create_topics(secure_kafka.admin)
    settings = secure_kafka.settings(user)
    topic = settings.topic_routed(topic_of)
    bus = KafkaBus(settings)
    await bus.start()
    try:
        with pytest.raises(KafkaAccessDenied) as denied:
            await asyncio.wait_for(bus.send([OutMessage(topic=topic, key="k", value=b"{}")]), 30)
    finally:
        await bus.stop()
    assert f"Kafka denies User:{user} WRITE on topic(s) {topic}" in str(denied.value)
    assert not denied.value.retriable


async def test_a_user_that_may_write_nothing_gets_no_producer(secure_kafka: SecureKafka) -> None:
    bus = KafkaBus(secure_kafka.settings("dept-support"))
    with pytest.raises(KafkaAccessDenied, match="Kafka denies User:dept-support an idempotent producer"):
        await bus.start()
    await bus.stop()
