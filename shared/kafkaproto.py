"""Kafka requests aiokafka does not make, built from its own protocol types.

- Metadata v8 with the operations the caller may perform on each topic (KIP-430): how a service checks
  its ACLs at start without trying each operation.
- CreateAcls and DeleteAcls with many bindings in one request (aiokafka's builders take one).
- AlterUserScramCredentials and DescribeUserScramCredentials (KIP-554): SCRAM users through the broker,
  so that neither the Helm job nor the local script needs Kafka's Java tools.

The codes are Kafka's (org.apache.kafka.common.acl / resource): they travel on the wire as integers.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from typing import Any

from aiokafka.protocol.admin import CreateAclsRequest_v1, DeleteAclsRequest_v1, DescribeGroupsResponse_v3
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    Array,
    Boolean,
    CompactArray,
    CompactBytes,
    CompactString,
    Int8,
    Int16,
    Int32,
    Schema,
    String,
    TaggedFields,
)


class ResourceType(IntEnum):
    ANY = 1
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5


class PatternType(IntEnum):
    ANY = 1
    LITERAL = 3
    PREFIXED = 4


class Operation(IntEnum):
    ANY = 1
    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12


class Permission(IntEnum):
    ANY = 1
    DENY = 2
    ALLOW = 3


class ScramMechanism(IntEnum):
    SCRAM_SHA_256 = 1
    SCRAM_SHA_512 = 2


def allowed(bits: int, operation: Operation) -> bool:
    """Whether an authorized-operations bit field (KIP-430) holds `operation`. The broker folds what an
    operation implies into the field already (READ or WRITE brings DESCRIBE)."""
    return bits != -(2**31) and bool(bits & (1 << operation))


# --- Metadata v8: topics with their authorized operations -------------------------------------------


class _MetadataResponseV8(Response):  # type: ignore[misc]
    API_KEY = 3
    API_VERSION = 8
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "brokers",
            Array(("node_id", Int32), ("host", String("utf-8")), ("port", Int32), ("rack", String("utf-8"))),
        ),
        ("cluster_id", String("utf-8")),
        ("controller_id", Int32),
        (
            "topics",
            Array(
                ("error_code", Int16),
                ("name", String("utf-8")),
                ("is_internal", Boolean),
                (
                    "partitions",
                    Array(
                        ("error_code", Int16),
                        ("partition_index", Int32),
                        ("leader_id", Int32),
                        ("leader_epoch", Int32),
                        ("replica_nodes", Array(Int32)),
                        ("isr_nodes", Array(Int32)),
                        ("offline_replicas", Array(Int32)),
                    ),
                ),
                ("topic_authorized_operations", Int32),
            ),
        ),
        ("cluster_authorized_operations", Int32),
    )


class _MetadataRequestV8(RequestStruct):  # type: ignore[misc]
    API_KEY = 3
    API_VERSION = 8
    RESPONSE_TYPE = _MetadataResponseV8
    SCHEMA = Schema(
        ("topics", Array(String("utf-8"))),
        ("allow_auto_topic_creation", Boolean),
        ("include_cluster_authorized_operations", Boolean),
        ("include_topic_authorized_operations", Boolean),
    )


class TopicOperationsRequest(Request[_MetadataRequestV8]):  # type: ignore[misc]
    """Metadata of `topics` (never creating one) with the operations the caller may perform on each."""

    API_KEY = 3

    def __init__(self, topics: Sequence[str]) -> None:
        self._topics = list(topics)

    def build(self, request_struct_class: type[_MetadataRequestV8]) -> _MetadataRequestV8:
        return request_struct_class(self._topics, False, False, True)


def topic_operations(response: Any) -> dict[str, tuple[int, int]]:
    """(error code, authorized operations) per topic of a TopicOperationsRequest's response."""
    return {t[1]: (t[0], t[4]) for t in response.topics}


# --- DescribeGroups v3 with the authorized operations ----------------------------------------------------


class _DescribeGroupsRequestV3(RequestStruct):  # type: ignore[misc]
    # aiokafka's v3 struct reads the answer as v2, without the authorized operations.
    API_KEY = 15
    API_VERSION = 3
    RESPONSE_TYPE = DescribeGroupsResponse_v3
    SCHEMA = Schema(("groups", Array(String("utf-8"))), ("include_authorized_operations", Boolean))


class GroupOperationsRequest(Request[_DescribeGroupsRequestV3]):  # type: ignore[misc]
    """A consumer group (sent to its coordinator) with the operations the caller may perform on it."""

    API_KEY = 15

    def __init__(self, group: str) -> None:
        self._group = group

    def build(self, request_struct_class: type[_DescribeGroupsRequestV3]) -> _DescribeGroupsRequestV3:
        return request_struct_class([self._group], True)


def group_operations(response: Any) -> dict[str, tuple[int, int]]:
    """(error code, authorized operations) per group of a GroupOperationsRequest's response."""
    return {g[1]: (g[0], g[6]) for g in response.groups}


# --- ACLs, many at once -------------------------------------------------------------------------------

# (resource type, resource name, pattern type, principal, host, operation, permission)
AclTuple = tuple[int, str, int, str, str, int, int]


class CreateAcls(Request[CreateAclsRequest_v1]):  # type: ignore[misc]
    API_KEY = 30

    def __init__(self, creations: Sequence[AclTuple]) -> None:
        self._creations = list(creations)

    def build(self, request_struct_class: type[CreateAclsRequest_v1]) -> CreateAclsRequest_v1:
        return request_struct_class(self._creations)


class DeleteAcls(Request[DeleteAclsRequest_v1]):  # type: ignore[misc]
    """Deletes the ACLs matching each filter; exact bindings as filters delete exactly those."""

    API_KEY = 31

    def __init__(self, filters: Sequence[AclTuple]) -> None:
        self._filters = list(filters)

    def build(self, request_struct_class: type[DeleteAclsRequest_v1]) -> DeleteAclsRequest_v1:
        return request_struct_class(self._filters)


# --- SCRAM credentials (KIP-554) ----------------------------------------------------------------------


class _AlterScramResponseV0(Response):  # type: ignore[misc]
    API_KEY = 51
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "results",
            CompactArray(
                ("user", CompactString("utf-8")),
                ("error_code", Int16),
                ("error_message", CompactString("utf-8")),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class _AlterScramRequestV0(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = 51
    API_VERSION = 0
    RESPONSE_TYPE = _AlterScramResponseV0
    SCHEMA = Schema(
        (
            "deletions",
            CompactArray(("name", CompactString("utf-8")), ("mechanism", Int8), ("tags", TaggedFields)),
        ),
        (
            "upsertions",
            CompactArray(
                ("name", CompactString("utf-8")),
                ("mechanism", Int8),
                ("iterations", Int32),
                ("salt", CompactBytes),
                ("salted_password", CompactBytes),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class AlterScramCredentials(Request[_AlterScramRequestV0]):  # type: ignore[misc]
    """Upsertions: (user, mechanism, iterations, salt, salted password); deletions: (user, mechanism)."""

    API_KEY = 51

    def __init__(
        self,
        *,
        upsertions: Sequence[tuple[str, int, int, bytes, bytes]] = (),
        deletions: Sequence[tuple[str, int]] = (),
    ) -> None:
        self._upsertions: list[tuple[Any, ...]] = [(*u, {}) for u in upsertions]
        self._deletions: list[tuple[Any, ...]] = [(*d, {}) for d in deletions]

    def build(self, request_struct_class: type[_AlterScramRequestV0]) -> _AlterScramRequestV0:
        return request_struct_class(self._deletions, self._upsertions, {})


class _DescribeScramResponseV0(Response):  # type: ignore[misc]
    API_KEY = 50
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("error_message", CompactString("utf-8")),
        (
            "results",
            CompactArray(
                ("user", CompactString("utf-8")),
                ("error_code", Int16),
                ("error_message", CompactString("utf-8")),
                (
                    "credential_infos",
                    CompactArray(("mechanism", Int8), ("iterations", Int32), ("tags", TaggedFields)),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class _DescribeScramRequestV0(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = 50
    API_VERSION = 0
    RESPONSE_TYPE = _DescribeScramResponseV0
    SCHEMA = Schema(
        ("users", CompactArray(("name", CompactString("utf-8")), ("tags", TaggedFields))),
        ("tags", TaggedFields),
    )


class DescribeScramCredentials(Request[_DescribeScramRequestV0]):  # type: ignore[misc]
    """The SCRAM credentials of every user (no names) or of the users named."""

    API_KEY = 50

    def __init__(self, users: Sequence[str] | None = None) -> None:
        self._users: list[tuple[str, dict[int, bytes]]] | None = (
            None if users is None else [(u, {}) for u in users]
        )

    def build(self, request_struct_class: type[_DescribeScramRequestV0]) -> _DescribeScramRequestV0:
        return request_struct_class(self._users, {})
