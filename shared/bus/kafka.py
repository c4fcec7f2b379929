"""The Kafka bus (aiokafka): idempotent producer with acks=all, consumers that commit explicitly."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaClient, AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    CommitFailedError,
    GroupAuthorizationFailedError,
    IllegalStateError,
    KafkaConnectionError,
    MessageSizeTooLargeError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
    UnknownTopicOrPartitionError,
)
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.protocol.metadata import MetadataRequest
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from shared.bus.base import CommitFailed, Consumer, OutMessage, Record, murmur2
from shared.errors import is_transient
from shared.kafkaauth import KafkaAccessDenied, authenticate, client_options, principal, sasl_enabled
from shared.settings import Settings

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36
# CreateTopics answers for a principal without CREATE on the topic or the cluster.
_CREATE_DENIED = (29, 31)
# How often a reader looks for partitions added to its topics; sooner while one of them does not exist.
_READER_REFRESH_S = 30.0
_READER_MISSING_TOPIC_REFRESH_S = 5.0
# How long a consumer keeps starting again while its topics are missing from the metadata.
_CONSUMER_START_RETRY_S = 30.0
# The largest message the producer takes (its max_request_size).
_MAX_REQUEST_SIZE = 4 * 1024 * 1024


def next_offsets(records: Sequence[Record]) -> dict[TopicPartition, int]:
    """Per partition, the offset to commit after `records` (the next one to read)."""
    offsets: dict[TopicPartition, int] = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        offsets[tp] = max(offsets.get(tp, 0), r.offset + 1)
    return offsets


def _denied(settings: Settings, operation: str, exc: Exception) -> KafkaAccessDenied:
    """An authorisation error of the broker as the operator should read it: who, what, on which."""
    if isinstance(exc, GroupAuthorizationFailedError):
        what = f"consumer group {exc.args[0]!r}" if exc.args else "its consumer group"
    else:
        what = f"topic(s) {', '.join(sorted(map(str, _flat(exc.args))))}" if exc.args else "a topic"
    return KafkaAccessDenied(
        f"Kafka denies {principal(settings)} {operation} on {what}: an ACL is missing "
        "(`mention-router kafka acls` prints the ones each service needs)"
    )


def _flat(args: Sequence[Any]) -> list[Any]:
    # aiokafka passes a topic, or a set of them
    return [x for a in args for x in (a if isinstance(a, set | frozenset | list | tuple) else [a])]


def _records(batches: Mapping[Any, Sequence[Any]]) -> list[Record]:
    """aiokafka's batches (per partition) as our records."""
    return [
        Record(
            topic=r.topic,
            partition=r.partition,
            offset=r.offset,
            key=r.key.decode("utf-8", "replace") if r.key is not None else "",
            value=r.value if r.value is not None else b"",
            headers={k: v.decode("utf-8", "replace") for k, v in (r.headers or ())},
            timestamp_ms=r.timestamp,
        )
        for records in batches.values()
        for r in records
    ]


class KafkaConsumer:
    def __init__(self, settings: Settings, topics: Sequence[str], group_id: str) -> None:
        self._topics = list(topics)
        self._settings = settings
        # Made by start(): an AIOKafkaConsumer created and never started warns when collected, and a
        # service builds its consumer before it knows whether it will run.
        self._make: Callable[[], AIOKafkaConsumer] = lambda: AIOKafkaConsumer(
            *self._topics,
            bootstrap_servers=settings.kafka_bootstrap_servers,
            client_id=f"{settings.kafka_client_id}.{group_id}",
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=settings.consumer_max_records,
            fetch_max_wait_ms=100,
            # Exactly-once: messages of an open or aborted transaction are never seen.
            isolation_level="read_committed" if settings.exactly_once else "read_uncommitted",
            **client_options(settings),
        )

    async def start(self) -> None:
        # A topic created a moment ago may not be in every broker's metadata yet: aiokafka then raises
        # UnknownTopicOrPartitionError from start() and leaves that consumer unusable, so a fresh one
        # tries again for a while before the error is let through.
        deadline = time.monotonic() + _CONSUMER_START_RETRY_S
        while True:
            consumer = self._make()
            try:
                await consumer.start()
            except (TopicAuthorizationFailedError, GroupAuthorizationFailedError) as exc:
                await consumer.stop()
                raise _denied(self._settings, "READ", exc) from exc
            except UnknownTopicOrPartitionError:
                await consumer.stop()
                if time.monotonic() >= deadline:
                    raise
                log.info(
                    "topics %s not in the broker's metadata yet; starting the consumer again", self._topics
                )
                await asyncio.sleep(0.5)
                continue
            self._consumer = consumer
            return

    async def stop(self) -> None:
        await self._consumer.stop()

    def assignment(self) -> set[tuple[str, int]]:
        """The (topic, partition) pairs this member holds now; empty before it joined its group."""
        consumer = getattr(self, "_consumer", None)
        return {(tp.topic, tp.partition) for tp in consumer.assignment()} if consumer is not None else set()

    async def getmany(self, *, timeout_ms: int, max_records: int) -> list[Record]:
        try:
            batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        except (TopicAuthorizationFailedError, GroupAuthorizationFailedError) as exc:
            raise _denied(self._settings, "READ", exc) from exc
        return _records(batches)

    async def commit(self, records: Sequence[Record]) -> None:
        offsets = next_offsets(records)
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            raise CommitFailed(str(exc)) from exc

    async def lag(self) -> dict[tuple[str, int], int]:
        """Per assigned partition, the records between our position and the high watermark, as of the
        last fetch (no request to the broker). Partitions not fetched yet are left out."""
        out: dict[tuple[str, int], int] = {}
        for tp in self._consumer.assignment():
            highwater = self._consumer.highwater(tp)
            if highwater is None:
                continue
            out[(tp.topic, tp.partition)] = max(0, highwater - await self._consumer.position(tp))
        return out

    async def rewind(self) -> None:
        for tp in self._consumer.assignment():
            committed = await self._consumer.committed(tp)
            if committed is None:
                await self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, committed)


class KafkaReader:
    """Reads topics from chosen offsets with no consumer group: assigned partitions and seeks, nothing
    committed (see `Bus.reader`)."""

    def __init__(
        self,
        bus: KafkaBus,
        settings: Settings,
        topics: Sequence[str],
        start: Mapping[str, Mapping[int, int]] | None,
    ) -> None:
        self._bus = bus
        self._settings = settings
        self._topics = list(dict.fromkeys(topics))
        self._start = start or {}
        self._positions: dict[str, dict[int, int]] = {t: {} for t in self._topics}
        self._consumer: AIOKafkaConsumer | None = None
        self._next_refresh = 0.0

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._settings.kafka_bootstrap_servers,
            client_id=f"{self._settings.kafka_client_id}.reader",
            group_id=None,
            enable_auto_commit=False,
            # Where a position is no longer held (retention) or lies past the end.
            auto_offset_reset="earliest",
            # The broker answers a fetch as soon as a record arrives; the wait only bounds idle polling.
            fetch_max_wait_ms=500,
            # Readers show what happened: never a record of an open or aborted transaction.
            isolation_level="read_committed",
            **client_options(self._settings),
        )
        await consumer.start()
        self._consumer = consumer
        try:
            await self._assign(first=True)
        except BaseException:
            self._consumer = None
            await consumer.stop()
            raise

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    def positions(self) -> dict[str, dict[int, int]]:
        return {topic: dict(parts) for topic, parts in self._positions.items()}

    async def _assign(self, *, first: bool) -> None:
        """Assign every partition of the topics: those already held at their positions, the rest where
        `start` says (on the first call) or from their earliest record (partitions added since)."""
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("the reader is not started")
        found = await self._bus.partitions(self._topics)
        missing = any(not found.get(t) for t in self._topics)
        self._next_refresh = time.monotonic() + (
            _READER_MISSING_TOPIC_REFRESH_S if missing else _READER_REFRESH_S
        )
        wanted = {TopicPartition(t, p) for t, parts in found.items() for p in parts}
        held = {TopicPartition(t, p) for t, parts in self._positions.items() for p in parts}
        # Nothing to assign is no assignment at all: a consumer without topics refreshes the metadata of
        # every topic of the cluster.
        if not wanted or (not first and wanted <= held):
            return
        consumer.assign(sorted(wanted))
        to_beginning: list[TopicPartition] = []
        to_end: list[TopicPartition] = []
        for tp in sorted(wanted):
            if tp in held:
                # Re-assigning forgets positions: put back ours (records prefetched past them are dropped).
                consumer.seek(tp, self._positions[tp.topic][tp.partition])
            elif first and tp.topic not in self._start:
                to_end.append(tp)
            elif first and tp.partition in self._start[tp.topic]:
                consumer.seek(tp, self._start[tp.topic][tp.partition])
            else:
                to_beginning.append(tp)
        if to_beginning:
            await consumer.seek_to_beginning(*to_beginning)
        if to_end:
            await consumer.seek_to_end(*to_end)
        for tp in sorted(wanted - held):
            self._positions[tp.topic][tp.partition] = await consumer.position(tp)

    async def getmany(self, *, timeout_ms: int, max_records: int) -> list[Record]:
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("the reader is not started")
        if time.monotonic() >= self._next_refresh:
            try:
                await self._assign(first=False)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("reader: could not look for new partitions (%s); trying again later", exc)
                self._next_refresh = time.monotonic() + _READER_MISSING_TOPIC_REFRESH_S
        if not consumer.assignment():
            await asyncio.sleep(min(timeout_ms / 1000, max(0.0, self._next_refresh - time.monotonic())))
            return []
        try:
            batches = await consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        except TopicAuthorizationFailedError as exc:
            raise _denied(self._settings, "READ", exc) from exc
        records = _records(batches)
        for r in records:
            self._positions[r.topic][r.partition] = r.offset + 1
        return records


class KafkaBus:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        # One transactional producer per consumer group, made on first use (exactly-once only).
        self._transactional: dict[str, AIOKafkaProducer] = {}
        self._transaction_lock = asyncio.Lock()
        # For the readers' partition look-ups, made on first use.
        self._metadata: AIOKafkaClient | None = None
        self._metadata_lock = asyncio.Lock()

    async def _started_producer(self, **extra: Any) -> AIOKafkaProducer:
        """An idempotent producer with acks=all and the configured batching, started."""
        options: dict[str, Any] = {
            "bootstrap_servers": self._settings.kafka_bootstrap_servers,
            "client_id": self._settings.kafka_client_id,
            "enable_idempotence": True,
            "acks": "all",
            "linger_ms": self._settings.producer_linger_ms,
            "max_batch_size": self._settings.producer_max_batch_size,
            "max_request_size": _MAX_REQUEST_SIZE,
            "request_timeout_ms": 30_000,
            **client_options(self._settings),
        }
        producer = AIOKafkaProducer(**(options | extra))
        try:
            await producer.start()
        except ClusterAuthorizationFailedError:
            await producer.stop()
            raise KafkaAccessDenied(
                f"Kafka denies {principal(self._settings)} an idempotent producer (it may WRITE no topic): "
                "an ACL is missing (`mention-router kafka acls` prints the ones each service needs)"
            ) from None
        except BaseException:
            # A producer that failed to start still holds a client; close it rather than leak it.
            await producer.stop()
            raise
        return producer

    async def start(self) -> None:
        # A refused login stops the process here (not retriable), naming the principal.
        await authenticate(self._settings)
        self._producer = await self._started_producer()

    async def verify_access(self, service: str) -> None:
        """With SASL, check the ACLs `service` needs (shared/kafkaacl.py), and start its transactional
        producers now so that a missing transactional-id ACL shows before the first batch."""
        if not sasl_enabled(self._settings):
            return
        from shared.kafkaacl import check_access, service_access

        await check_access(self._settings, service)
        need = service_access(self._settings, service)
        if need.transactional_prefixes:
            for group in need.groups:
                await self._transactional_producer(group)

    async def stop(self) -> None:
        if self._metadata is not None:
            metadata, self._metadata = self._metadata, None
            await metadata.close()
        transactional, self._transactional = self._transactional, {}
        for txn_producer in transactional.values():
            await txn_producer.stop()
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def check(self) -> None:
        """A metadata round trip to the cluster, within 3 s; a broker that is away raises."""
        if self._producer is None:
            raise ConnectionError("the Kafka bus is not started")
        ok = await asyncio.wait_for(self._producer.client.fetch_all_metadata(), 3.0)
        if ok is None or not ok.brokers():
            raise ConnectionError("no Kafka broker answered the metadata request")

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self._settings.kafka_bootstrap_servers,
            client_id=f"{self._settings.kafka_client_id}.admin",
            **client_options(self._settings),
        )
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = [t for t in topics if t not in existing]
            if not missing:
                return
            response: Any = await admin.create_topics([self._new_topic(t) for t in missing])
            for error in response.topic_errors:
                topic, code = error[0], error[1]
                if code in _CREATE_DENIED:
                    raise KafkaAccessDenied(
                        f"the Kafka topic {topic!r} does not exist, and {principal(self._settings)} may "
                        "not create it: run `mention-router topics create` as the admin first"
                    )
                if code not in (0, _TOPIC_ALREADY_EXISTS):
                    raise RuntimeError(f"could not create Kafka topic {topic!r}: error code {code}")
            log.info("created topics %s", ", ".join(missing))
        finally:
            await admin.close()

    def _new_topic(self, topic: str) -> NewTopic:
        # Partitions and retention per topic from the settings (MR_TOPIC_OVERRIDES).
        partitions, retention_ms = self._settings.topic_spec(topic)
        return NewTopic(
            name=topic,
            num_partitions=partitions,
            replication_factor=self._settings.topic_replication_factor,
            topic_configs={} if retention_ms is None else {"retention.ms": str(retention_ms)},
        )

    async def send(self, messages: Sequence[OutMessage]) -> None:
        if self._producer is None:
            raise RuntimeError("the Kafka bus is not started")
        # Returns once every message is acknowledged by all in-sync replicas (acks=all).
        await _send_all(self._producer, messages, self._settings)

    async def send_in_transaction(
        self, messages: Sequence[OutMessage], records: Sequence[Record], *, consumer: Consumer, group_id: str
    ) -> None:
        """The messages and the group's offsets after `records` in one transaction: a read_committed
        consumer sees the messages if and only if the offsets moved past their inputs."""
        producer = await self._transactional_producer(group_id)
        offsets = next_offsets(records)
        async with self._transaction_lock:
            await producer.begin_transaction()
            try:
                await _send_all(producer, messages, self._settings)
                if offsets:
                    await producer.send_offsets_to_transaction(offsets, group_id)
            except BaseException:
                await producer.abort_transaction()
                raise
            await producer.commit_transaction()

    async def _transactional_producer(self, group_id: str) -> AIOKafkaProducer:
        producer = self._transactional.get(group_id)
        if producer is not None:
            return producer
        # A transactional id of its own per process: replicas never fence each other. A process that
        # dies mid-transaction leaves it open until the transaction timeout, which bounds how long
        # read_committed consumers of those partitions wait.
        from shared.kafkaacl import transactional_prefix

        transactional_id = f"{transactional_prefix(self._settings, group_id)}{uuid.uuid4().hex[:12]}"
        try:
            producer = await self._started_producer(
                client_id=f"{self._settings.kafka_client_id}.txn",
                transactional_id=transactional_id,
                transaction_timeout_ms=30_000,
            )
        except TransactionalIdAuthorizationFailed:
            raise KafkaAccessDenied(
                f"Kafka denies {principal(self._settings)} WRITE on transactional id {transactional_id!r} "
                f"(exactly-once, MR_EXACTLY_ONCE): an ACL on the prefix "
                f"{transactional_prefix(self._settings, group_id)!r} is missing (`mention-router kafka acls`)"
            ) from None
        self._transactional[group_id] = producer
        return producer

    def consumer(self, topics: Sequence[str], *, group_id: str) -> KafkaConsumer:
        return KafkaConsumer(self._settings, topics, group_id)

    def reader(
        self, topics: Sequence[str], *, start: Mapping[str, Mapping[int, int]] | None = None
    ) -> KafkaReader:
        return KafkaReader(self, self._settings, topics, start)

    async def partitions(self, topics: Sequence[str]) -> dict[str, list[int]]:
        """The partitions of those of `topics` that exist, as the cluster describes them."""
        async with self._metadata_lock:
            client = self._metadata
            if client is None:
                client = AIOKafkaClient(
                    bootstrap_servers=self._settings.kafka_bootstrap_servers,
                    client_id=f"{self._settings.kafka_client_id}.metadata",
                    **client_options(self._settings),
                )
                try:
                    await client.bootstrap()
                except BaseException:
                    await client.close()
                    raise
                self._metadata = client
        node = client.get_random_node()
        if node is None:
            raise KafkaConnectionError("no Kafka broker is known")
        # The named topics only (a cluster may hold thousands), and without creating a missing one, as
        # asking would on a broker with auto.create.topics.enable.
        response = await client.send(node, MetadataRequest(list(topics), allow_auto_topic_creation=False))
        described: list[dict[str, Any]] = response.to_object()["topics"]
        return {
            t["topic"]: sorted(p["partition"] for p in t["partitions"])
            for t in described
            if t["error_code"] == 0
        }


async def _send_all(producer: AIOKafkaProducer, messages: Sequence[OutMessage], settings: Settings) -> None:
    """Build one record batch per partition from the messages, hand the batches to the producer, then wait
    for every acknowledgement.

    This is aiokafka's batch API instead of one `send` per message: `send` cost ~11 µs a message in the
    router (its metadata wait, a partitioner in Python, a future per message resolved on the
    acknowledgement). Here a key's partition is hashed once per call (a mention's routed events share
    their key) with a cheaper murmur2, and the placement is the default partitioner's:
    murmur2(key) & 0x7fffffff modulo the partitions, sorted by id. Within a partition the messages keep
    their order, and an idempotent or transactional producer numbers the batches as it does its own.
    """
    partitions: dict[str, list[int]] = {}
    hashes: dict[str, int] = {}
    builders: dict[tuple[str, int], BatchBuilder] = {}
    waits: list[tuple[str, asyncio.Future[Any]]] = []
    try:
        for m in messages:
            parts = partitions.get(m.topic)
            if parts is None:
                # Waits for the topic's metadata as `send` does; raises for a topic we may not describe.
                parts = partitions[m.topic] = sorted(await producer.partitions_for(m.topic))
            key_hash = hashes.get(m.key)
            if key_hash is None:
                key_hash = hashes[m.key] = murmur2(m.key.encode()) & 0x7FFFFFFF
            headers = [(k, v.encode()) for k, v in m.headers.items()]
            key = m.key.encode()
            size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, m.value, headers)
            if size > _MAX_REQUEST_SIZE:
                # What `send` raises for it, before anything of the call is queued.
                raise MessageSizeTooLargeError(
                    f"the message to {m.topic} is {size} bytes when serialized, over the "
                    f"{_MAX_REQUEST_SIZE}-byte max_request_size"
                )
            tp = (m.topic, parts[key_hash % len(parts)])
            builder = builders.get(tp)
            if builder is None:
                builder = builders[tp] = producer.create_batch()
            if builder.append(timestamp=None, key=key, value=m.value, headers=headers) is None:
                # Full: queue it (waits while the partition's previous batch is not drained yet) and start
                # the next; the first message of a batch always fits.
                waits.append((m.topic, await producer.send_batch(builder, tp[0], partition=tp[1])))
                builder = builders[tp] = producer.create_batch()
                builder.append(timestamp=None, key=key, value=m.value, headers=headers)
        for (topic, partition), builder in builders.items():
            waits.append((topic, await producer.send_batch(builder, topic, partition=partition)))
    except BaseException as exc:
        # What was queued still goes out (as with `send`); nobody waits for it, so read its outcome here
        # rather than leave "exception was never retrieved" in the log.
        for _, wait in waits:
            wait.add_done_callback(_retrieve)
        if isinstance(exc, TopicAuthorizationFailedError):  # no DESCRIBE: the metadata names the topic
            raise _denied(settings, "WRITE", exc) from exc
        raise
    results = await asyncio.gather(*(w for _, w in waits), return_exceptions=True)
    # A produce response's authorisation error names no topic: the batches it failed do.
    denied = {
        topic
        for (topic, _), r in zip(waits, results, strict=True)
        if isinstance(r, TopicAuthorizationFailedError)
    }
    if denied:
        raise _denied(settings, "WRITE", TopicAuthorizationFailedError(denied))
    for result in results:
        if isinstance(result, BaseException):
            raise result


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
