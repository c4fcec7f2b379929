"""`topics create` reports the partitions of a topic it has just made, though the broker's metadata may
not have them yet on the first ask (a CI run saw "0 partition(s) (created)")."""

from __future__ import annotations

from typing import Any, cast

from aiokafka.admin import AIOKafkaAdminClient

from shared.topics import _partitions


class _LateMetadata:
    def __init__(self) -> None:
        self.asked = 0

    async def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
        self.asked += 1
        partitions = [{"partition": 0}] if self.asked > 2 else []
        return [{"topic": t, "partitions": partitions} for t in topics]


async def test_partitions_are_asked_again_until_the_metadata_has_them() -> None:
    admin = _LateMetadata()
    assert await _partitions(cast(AIOKafkaAdminClient, admin), ["a", "b"]) == {"a": 1, "b": 1}
    assert admin.asked == 3
