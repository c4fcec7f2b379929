"""The Kafka bus (aiokafka): idempotent producer with acks=all, consumers that commit explicitly."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import CommitFailedError, IllegalStateError

from shared.bus.base import CommitFailed, Consumer, OutMessage, Record
from shared.settings import Settings

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36


def next_offsets(records: Sequence[Record]) -> dict[TopicPartition, int]:
    """Per partition, the offset to commit after `records` (the next one to read)."""
    offsets: dict[TopicPartition, int] = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        offsets[tp] = max(offsets.get(tp, 0), r.offset + 1)
    return offsets


class KafkaConsumer:
    def __init__(self, settings: Settings, topics: Sequence[str], group_id: str) -> None:
        self._topics = list(topics)
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
        )

    async def start(self) -> None:
        self._consumer = self._make()
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    def assignment(self) -> set[tuple[str, int]]:
        """The (topic, partition) pairs this member holds now; empty before it joined its group."""
        consumer = getattr(self, "_consumer", None)
        return {(tp.topic, tp.partition) for tp in consumer.assignment()} if consumer is not None else set()

    async def getmany(self, *, timeout_ms: int, max_records: int) -> list[Record]:
        batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        out: list[Record] = []
        for records in batches.values():
            for r in records:
                out.append(
                    Record(
                        topic=r.topic,
                        partition=r.partition,
                        offset=r.offset,
                        key=r.key.decode("utf-8", "replace") if r.key is not None else "",
                        value=r.value if r.value is not None else b"",
                        headers={k: v.decode("utf-8", "replace") for k, v in (r.headers or ())},
                        timestamp_ms=r.timestamp,
                    )
                )
        return out

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


class KafkaBus:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        # One transactional producer per consumer group, made on first use (exactly-once only).
        self._transactional: dict[str, AIOKafkaProducer] = {}
        self._transaction_lock = asyncio.Lock()

    async def _started_producer(self, **extra: Any) -> AIOKafkaProducer:
        """An idempotent producer with acks=all and the configured batching, started."""
        options: dict[str, Any] = {
            "bootstrap_servers": self._settings.kafka_bootstrap_servers,
            "client_id": self._settings.kafka_client_id,
            "enable_idempotence": True,
            "acks": "all",
            "linger_ms": self._settings.producer_linger_ms,
            "max_batch_size": self._settings.producer_max_batch_size,
            "max_request_size": 4 * 1024 * 1024,
            "request_timeout_ms": 30_000,
        }
        producer = AIOKafkaProducer(**(options | extra))
        try:
            await producer.start()
        except BaseException:
            # A producer that failed to start still holds a client; close it rather than leak it.
            await producer.stop()
            raise
        return producer

    async def start(self) -> None:
        self._producer = await self._started_producer()

    async def stop(self) -> None:
        transactional, self._transactional = self._transactional, {}
        for txn_producer in transactional.values():
            await txn_producer.stop()
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self._settings.kafka_bootstrap_servers,
            client_id=f"{self._settings.kafka_client_id}.admin",
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
        await _send_all(self._producer, messages)

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
                await _send_all(producer, messages)
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
        producer = await self._started_producer(
            client_id=f"{self._settings.kafka_client_id}.txn",
            transactional_id=f"{self._settings.kafka_client_id}.{group_id}.{uuid.uuid4().hex[:12]}",
            transaction_timeout_ms=30_000,
        )
        self._transactional[group_id] = producer
        return producer

    def consumer(self, topics: Sequence[str], *, group_id: str) -> KafkaConsumer:
        return KafkaConsumer(self._settings, topics, group_id)


async def _send_all(producer: AIOKafkaProducer, messages: Sequence[OutMessage]) -> None:
    """Queue every message (batched by the producer), then wait for all the acknowledgements."""
    futures = [
        await producer.send(
            m.topic,
            value=m.value,
            key=m.key.encode(),
            headers=[(k, v.encode()) for k, v in m.headers.items()],
        )
        for m in messages
    ]
    await asyncio.gather(*futures)
