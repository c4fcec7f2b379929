"""The message bus: one port (`Bus`), a Kafka adapter and an in-memory twin with the same semantics."""

from __future__ import annotations

from shared.bus.base import Bus, CommitFailed, Consumer, OutMessage, Reader, Record
from shared.bus.memory import MemoryBroker, MemoryBus
from shared.settings import BusKind, Settings


def build_bus(settings: Settings, *, broker: MemoryBroker | None = None) -> Bus:
    """The bus the settings ask for. An in-memory bus shares `broker` when one is given."""
    if settings.bus is BusKind.MEMORY:
        return MemoryBus(broker, partitions=settings.topic_partitions)
    from shared.bus.kafka import KafkaBus

    return KafkaBus(settings)


__all__ = [
    "Bus",
    "CommitFailed",
    "Consumer",
    "MemoryBroker",
    "MemoryBus",
    "OutMessage",
    "Reader",
    "Record",
    "build_bus",
]
