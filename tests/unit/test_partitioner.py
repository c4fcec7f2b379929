"""Our murmur2 places every key where aiokafka's default partitioner (Kafka's Java client) does."""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from shared.bus.base import murmur2, partition_for

KEYS = [
    "",
    "a",
    "ab",
    "abc",
    "abcd",
    "abcde",
    "abcdef",
    "abcdefg",
    "key-0",
    "one-key",
    "3f2b8c1e-9a4d-4e6f-8b7a-1c2d3e4f5a6b",
    "0123456789abcdef" * 4,
    "ünïcødé-ключ-鍵",
    "x" * 1001,
]


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("partitions", [1, 2, 3, 4, 6, 12, 13, 64])
def test_a_key_goes_where_the_default_partitioner_puts_it(key: str, partitions: int) -> None:
    every = list(range(partitions))
    assert partition_for(key, partitions) == DefaultPartitioner()(key.encode(), every, every)


def test_murmur2_equals_the_java_clients_on_random_bytes() -> None:
    rng = random.Random(18)
    for _ in range(5000):
        data = rng.randbytes(rng.randrange(0, 80))
        assert murmur2(data) == aiokafka_murmur2(data) & 0xFFFFFFFF, data
