"""`mention-router topics create`: the pipeline's topics, with partitions and retention per topic.

Compose's topic job and the Helm chart's topic Job run it before the services start, so that topics get
the sizes ops chose rather than whatever the first service to start would create. Topics that exist
already are left as they are (Kafka cannot shrink partitions, and growing them moves keys between
partitions); the report says where they differ from the settings, and docs/operations.md how to change
them.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from shared.bus.kafka import KafkaBus
from shared.kafkaauth import authenticate, client_options
from shared.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicState:
    name: str
    partitions: int
    retention_ms: int | None
    wanted_partitions: int
    wanted_retention_ms: int | None
    created: bool

    def describe(self) -> str:
        retention = "broker default" if self.retention_ms is None else f"retention.ms={self.retention_ms}"
        done = "created" if self.created else "exists"
        line = f"{self.name}: {self.partitions} partition(s), {retention} ({done})"
        differs = []
        if self.partitions != self.wanted_partitions:
            differs.append(f"{self.wanted_partitions} partition(s)")
        if self.wanted_retention_ms is not None and self.retention_ms != self.wanted_retention_ms:
            differs.append(f"retention.ms={self.wanted_retention_ms}")
        if differs:
            line += f"; the settings ask for {', '.join(differs)}: left unchanged"
        return line


async def _partitions(
    admin: AIOKafkaAdminClient, topics: list[str], *, within_s: float = 10.0
) -> dict[str, int]:
    """Each topic's partition count. A topic created a moment ago may not have its partitions in the
    broker's metadata yet (it answers none): asked again until every topic has some, or `within_s`."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        described: list[Any] = await admin.describe_topics(topics)
        partitions = {t["topic"]: len(t["partitions"]) for t in described}
        if all(partitions.get(t, 0) > 0 for t in topics) or asyncio.get_running_loop().time() > deadline:
            return partitions
        await asyncio.sleep(0.2)


async def create_topics(settings: Settings) -> list[TopicState]:
    """Create every missing topic of the pipeline; return what each one looks like afterwards."""
    topics = settings.all_topics()
    await authenticate(settings)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=f"{settings.kafka_client_id}.admin",
        **client_options(settings),
    )
    await admin.start()
    try:
        before = set(await admin.list_topics())
        await KafkaBus(settings).ensure_topics(topics)
        partitions = await _partitions(admin, topics)
        retention = await _retention(admin, topics)
    finally:
        await admin.close()
    states = []
    for topic in topics:
        wanted_partitions, wanted_retention = settings.topic_spec(topic)
        states.append(
            TopicState(
                name=topic,
                partitions=partitions.get(topic, 0),
                retention_ms=retention.get(topic),
                wanted_partitions=wanted_partitions,
                wanted_retention_ms=wanted_retention,
                created=topic not in before,
            )
        )
    return states


async def _retention(admin: AIOKafkaAdminClient, topics: list[str]) -> dict[str, int | None]:
    """retention.ms per topic where it is set on the topic itself (not inherited from the broker)."""
    responses: list[Any] = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, t, configs={"retention.ms": None}) for t in topics]
    )
    out: dict[str, int | None] = {}
    for response in responses:
        # DescribeConfigs v1+: resources = [(error_code, error_message, type, name, [config entries])],
        # an entry = (name, value, read_only, config_source, is_sensitive, synonyms); source 1 = topic.
        for resource in response.resources:
            name, entries = resource[3], resource[4]
            out[name] = None
            for entry in entries:
                if entry[0] == "retention.ms" and entry[3] == 1 and entry[1] is not None:
                    out[name] = int(entry[1])
    return out
