"""`mention-router topics create` on the real broker: partitions and retention per topic, idempotent."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from devsupport.kafka import partitions
from shared.settings import REPO_ROOT, TopicOverride
from shared.topics import create_topics
from tests.conftest import KafkaEnv

pytestmark = pytest.mark.kafka

WEEK_MS = 7 * 24 * 3600 * 1000


async def test_creates_each_topic_with_its_own_partitions_and_retention(kafka: KafkaEnv) -> None:
    settings = kafka.settings(
        topic_partitions=3,
        topic_retention_ms=WEEK_MS,
        topic_overrides={
            "mentions.raw": TopicOverride(partitions=6),
            "mentions.dlq": TopicOverride(partitions=1, retention_ms=4 * WEEK_MS),
        },
    )
    states = {s.name: s for s in await create_topics(settings)}
    assert set(states) == set(settings.all_topics())
    assert all(s.created for s in states.values())
    described = await partitions(kafka.bootstrap, settings.all_topics())
    count = {t: sum(tp.topic == t for tp in described) for t in settings.all_topics()}
    assert count[settings.topic_raw] == 6
    assert count[settings.topic_dlq] == 1
    assert count[settings.topic_routed("pr")] == 3
    assert states[settings.topic_dlq].retention_ms == 4 * WEEK_MS
    assert states[settings.topic_classified].retention_ms == WEEK_MS

    # Again, asking for more partitions: nothing is created or changed, and the report says so.
    again = await create_topics(
        settings.model_copy(update={"topic_overrides": {"mentions.raw": TopicOverride(partitions=8)}})
    )
    raw = next(s for s in again if s.name == settings.topic_raw)
    assert not raw.created and raw.partitions == 6
    assert "ask for 8 partition(s): left unchanged" in raw.describe()


def test_command_line_options_and_environment(kafka: KafkaEnv) -> None:
    env = {
        **os.environ,
        "MR_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "MR_TOPIC_PREFIX": kafka.prefix,
        "MR_TOPIC_PARTITIONS": "2",
        "MR_TOPIC_OVERRIDES": '{"mentions.dlq": {"partitions": 1, "retention_ms": 86400000}}',
    }
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "topics", "create", "--partitions", "mentions.raw=5"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = {line.split(":")[0]: line for line in done.stdout.splitlines()}
    assert "5 partition(s)" in lines[f"{kafka.prefix}mentions.raw"]
    assert "1 partition(s), retention.ms=86400000 (created)" in lines[f"{kafka.prefix}mentions.dlq"]
    assert "2 partition(s), broker default (created)" in lines[f"{kafka.prefix}mentions.routed.rnd"]

    bad = subprocess.run(
        [sys.executable, "-m", "services.cli", "topics", "create", "--partitions", "mentions.raw=many"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "expected NAME=INTEGER" in bad.stderr
