"""Who may read and write what on Kafka: the ACLs of the services and the departments' consumers, from
the topic names the code uses (Settings), deny by default.

- ingest writes `mentions.raw`;
- the classifier reads raw and writes `mentions.classified` (with exactly-once, its transactional ids);
- the router reads classified and writes `mentions.routed.*`, `mentions.escalations`, `mentions.alerts`;
- the API writes raw (pushed mentions) and reads `mentions.routed.*` (the stream, the webhook fan-out);
- every stage writes `mentions.dlq` and uses its own consumer group;
- department X reads `mentions.routed.X` only, with consumer groups named `X.*` (after the topic prefix).

`mention-router kafka acls` prints or applies this set; each service checks at start that the broker
grants it what `service_access` says it needs (`check_access`), so a missing ACL stops it naming the
topic and the operation instead of failing at the first record.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import GroupAuthorizationFailedError, KafkaError
from aiokafka.protocol.admin import DescribeAclsRequest

from shared.kafkaauth import KafkaAccessDenied, client_options, principal
from shared.kafkaproto import (
    CreateAcls,
    DeleteAcls,
    GroupOperationsRequest,
    Operation,
    PatternType,
    Permission,
    ResourceType,
    TopicOperationsRequest,
    allowed,
    group_operations,
    topic_operations,
)
from shared.settings import DEPARTMENTS, Settings

log = logging.getLogger(__name__)

SERVICES = ("ingest", "classifier", "router", "api")
# The consumer group of the API's webhook fan-out (services/api/webhook_worker/fanout.py STAGE).
WEBHOOK_GROUP = "webhooks"
_UNKNOWN_TOPIC = 3
_COORDINATOR_WAIT_S = 30.0
_TOPIC_DENIED = 29


@dataclass(frozen=True)
class Access:
    """What one principal needs: topics to read and to write, consumer groups (by name or prefix),
    transactional ids (by prefix)."""

    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    group_prefixes: tuple[str, ...] = ()
    transactional_prefixes: tuple[str, ...] = ()


def transactional_prefix(settings: Settings, group_id: str) -> str:
    """The prefix of the transactional ids of a group's producers (shared.bus.kafka makes them)."""
    return f"{settings.kafka_client_id}.{group_id}."


def department_group_prefix(settings: Settings, department: str) -> str:
    # The dot keeps `pr.` from matching `product.`.
    return f"{settings.topic_prefix}{department}."


def service_access(settings: Settings, service: str) -> Access:
    routed = tuple(settings.topic_routed(d) for d in DEPARTMENTS)
    dlq = settings.topic_dlq
    if service == "ingest":
        return Access(writes=(settings.topic_raw, dlq))
    if service == "classifier":
        group = settings.group("classifier")
        return Access(
            reads=(settings.topic_raw,),
            writes=(settings.topic_classified, dlq),
            groups=(group,),
            transactional_prefixes=(transactional_prefix(settings, group),) if settings.exactly_once else (),
        )
    if service == "router":
        return Access(
            reads=(settings.topic_classified,),
            writes=(*routed, settings.topic_escalations, settings.topic_alerts, dlq),
            groups=(settings.group("router"),),
        )
    if service == "api":
        return Access(reads=routed, writes=(settings.topic_raw, dlq), groups=(settings.group(WEBHOOK_GROUP),))
    raise ValueError(f"no Kafka access is defined for {service!r} (one of {', '.join(SERVICES)})")


def department_access(settings: Settings, department: str) -> Access:
    if department not in DEPARTMENTS:
        raise ValueError(f"unknown department {department!r} (one of {', '.join(DEPARTMENTS)})")
    return Access(
        reads=(settings.topic_routed(department),),
        group_prefixes=(department_group_prefix(settings, department),),
    )


@dataclass(frozen=True, order=True)
class Binding:
    """One ALLOW ACL, from any host."""

    principal: str
    resource: ResourceType
    pattern: PatternType
    name: str
    operation: Operation

    def wire(self) -> tuple[int, str, int, str, str, int, int]:
        return (self.resource, self.name, self.pattern, self.principal, "*", self.operation, Permission.ALLOW)

    def describe(self) -> str:
        pattern = "" if self.pattern is PatternType.LITERAL else " (prefix)"
        return f"{self.principal}: {self.operation.name} {self.resource.name} {self.name}{pattern}"


def access_bindings(user: str, access: Access) -> list[Binding]:
    p = f"User:{user}"
    topic, group, txn = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.TRANSACTIONAL_ID
    literal, prefixed = PatternType.LITERAL, PatternType.PREFIXED
    return [
        *(Binding(p, topic, literal, t, Operation.READ) for t in access.reads),
        *(Binding(p, topic, literal, t, Operation.WRITE) for t in access.writes),
        *(Binding(p, group, literal, g, Operation.READ) for g in access.groups),
        *(Binding(p, group, prefixed, g, Operation.READ) for g in access.group_prefixes),
        *(Binding(p, txn, prefixed, t, Operation.WRITE) for t in access.transactional_prefixes),
    ]


def bindings(settings: Settings) -> list[Binding]:
    """Every ACL of the services and the departments' consumers (users from MR_KAFKA_SERVICE_USERS and
    MR_KAFKA_DEPARTMENT_USERS)."""
    out: list[Binding] = []
    for service in SERVICES:
        user = settings.kafka_service_users.get(service)
        if user:
            out += access_bindings(user, service_access(settings, service))
    for department in DEPARTMENTS:
        user = settings.kafka_department_users.get(department)
        if user:
            out += access_bindings(user, department_access(settings, department))
    return out


def users(settings: Settings) -> list[str]:
    """The users the ACLs name, services first."""
    named = [*settings.kafka_service_users.values(), *settings.kafka_department_users.values()]
    return list(dict.fromkeys(u for u in named if u))


# --- on the broker --------------------------------------------------------------------------------------


def admin_client(settings: Settings, purpose: str) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=f"{settings.kafka_client_id}.{purpose}",
        **client_options(settings),
    )


async def send(admin: AIOKafkaAdminClient, request: Any, *, node: int | None = None) -> Any:
    """A request aiokafka's admin client has no call for (ACLs, SCRAM users, authorized operations),
    over the admin client's own connections (to `node`, or any broker); the response."""
    return await admin._send_request(request, node)


def _binding_of(resource: Any, acl: Any) -> Binding | None:
    # DescribeAcls v1: resources = [(type, name, pattern type, [(principal, host, operation, permission)])]
    try:
        if acl[3] != Permission.ALLOW or acl[1] != "*":
            return None
        return Binding(
            acl[0], ResourceType(resource[0]), PatternType(resource[2]), resource[1], Operation(acl[2])
        )
    except ValueError:
        return None  # a kind of ACL this model never makes


async def existing(admin: AIOKafkaAdminClient, principals: Iterable[str] | None = None) -> set[Binding]:
    """The ALLOW ACLs on the broker (of `principals`, or everyone's)."""
    out: set[Binding] = set()
    for who in list(principals) if principals is not None else [None]:
        request = DescribeAclsRequest(
            ResourceType.ANY, None, PatternType.ANY, who, None, Operation.ANY, Permission.ANY
        )
        response = await send(admin, request)
        if response.error_code:
            raise RuntimeError(f"DescribeAcls failed: error {response.error_code} {response.error_message}")
        for resource in response.resources:
            for acl in resource[3]:
                binding = _binding_of(resource, acl)
                if binding is not None:
                    out.add(binding)
    return out


async def apply(settings: Settings, wanted: Sequence[Binding]) -> tuple[list[Binding], list[Binding]]:
    """Create the ACLs of `wanted` that the broker lacks; (created, already there). Idempotent."""
    admin = admin_client(settings, "acls")
    await admin.start()
    try:
        present = await existing(admin, {b.principal for b in wanted})
        missing = sorted(set(wanted) - present)
        if missing:
            response = await send(admin, CreateAcls([b.wire() for b in missing]))
            errors = [(b, r) for b, r in zip(missing, response.creation_responses, strict=True) if r[0]]
            if errors:
                b, (code, message) = errors[0]
                raise RuntimeError(f"could not create the ACL {b.describe()}: error {code} {message}")
    finally:
        await admin.close()
    return missing, sorted(set(wanted) & present)


async def remove(settings: Settings, unwanted: Sequence[Binding]) -> int:
    """Delete exactly these ACLs; how many the broker deleted."""
    if not unwanted:
        return 0
    admin = admin_client(settings, "acls")
    await admin.start()
    try:
        response = await send(admin, DeleteAcls([b.wire() for b in unwanted]))
    finally:
        await admin.close()
    for result in response.filter_responses:
        if result[0]:
            raise RuntimeError(f"could not delete ACLs: error {result[0]} {result[1]}")
    return sum(len(result[2]) for result in response.filter_responses)


# --- the check a service makes at start -----------------------------------------------------------------


def _denied(settings: Settings, operation: str, kind: str, name: str, why: str = "") -> KafkaAccessDenied:
    return KafkaAccessDenied(
        f"Kafka denies {principal(settings)} {operation} on {kind} {name!r}{why}: an ACL is missing "
        "(`mention-router kafka acls` prints the ones each service needs; `--apply` creates them)"
    )


async def check_access(settings: Settings, service: str) -> None:
    """Raise KafkaAccessDenied, naming the resource and the operation, for the first thing the broker
    does not grant this service; a topic that does not exist is an error too (the services do not
    create topics on a secured broker: `mention-router topics create` does, as the admin)."""
    need = service_access(settings, service)
    admin = admin_client(settings, "access")
    await admin.start()
    try:
        await _check_topics(settings, admin, need)
        await _check_groups(settings, admin, need.groups)
    finally:
        await admin.close()


async def _check_topics(settings: Settings, admin: AIOKafkaAdminClient, need: Access) -> None:
    wanted = [(t, Operation.READ) for t in need.reads] + [(t, Operation.WRITE) for t in need.writes]
    topics = list(dict.fromkeys(t for t, _ in wanted))
    response = await send(admin, TopicOperationsRequest(topics))
    described = topic_operations(response)
    for topic, operation in wanted:
        error, bits = described.get(topic, (_UNKNOWN_TOPIC, 0))
        if error == _TOPIC_DENIED:
            raise _denied(settings, operation.name, "topic", topic, " (not even DESCRIBE)")
        if error == _UNKNOWN_TOPIC:
            raise KafkaAccessDenied(
                f"the Kafka topic {topic!r} does not exist, and {principal(settings)} does not create "
                "topics: run `mention-router topics create` as the admin first"
            )
        if error:
            raise RuntimeError(f"Kafka metadata of {topic!r}: error {error}")
        if not allowed(bits, operation):
            raise _denied(settings, operation.name, "topic", topic)


async def _check_groups(settings: Settings, admin: AIOKafkaAdminClient, groups: Sequence[str]) -> None:
    for group in groups:
        try:
            error, bits = await _group_operations(admin, group)
        except GroupAuthorizationFailedError:
            raise _denied(settings, "READ", "consumer group", group) from None
        if error == GroupAuthorizationFailedError.errno or not allowed(bits, Operation.READ):
            raise _denied(settings, "READ", "consumer group", group)
        if error:
            raise RuntimeError(f"Kafka DescribeGroups of {group!r}: error {error}")


async def _group_operations(admin: AIOKafkaAdminClient, group: str) -> tuple[int, int]:
    """(error, authorized operations) of a group. A cluster's first group lookup creates the offsets
    topic, and the coordinator is "not available" until it exists: asked again for a while."""
    deadline = time.monotonic() + _COORDINATOR_WAIT_S
    while True:
        try:
            coordinator = await admin.find_coordinator(group)
            response = await send(admin, GroupOperationsRequest(group), node=coordinator)
        except KafkaError as exc:
            if not exc.retriable or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
            continue
        return group_operations(response).get(group, (0, 0))
