"""Ingest killed with SIGKILL while it polls and publishes, then started again.

50 feeds of 100 entries each, served slowly by the local feed server so that polling them all takes a few
seconds. Once a third of the entries are on `mentions.raw`, ingest is killed; a new ingest process takes
over the sources once the dead one's leases expire (MR_INGEST_LEASE_S=5 here). Entries published but not
yet marked seen are published again, which the mention id absorbs downstream.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devsupport.factories import atom, make_entries, rss
from devsupport.feedserver import FeedServer
from devsupport.kafka import end_offsets_total, read_topics
from devsupport.scenario import wait_for
from devsupport.sources import register
from shared.bus.base import Record
from shared.bus.codec import decode
from shared.events import MentionIngested, mention_id
from shared.sources import SourceSpec
from tests.conftest import KafkaEnv
from tests.faults.harness import FaultPipeline, expected_departments

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.postgres, pytest.mark.e2e]

FEEDS, PER_FEED = 50, 100
N = FEEDS * PER_FEED


@pytest.mark.timeout(150)
async def test_ingest_killed_mid_poll_and_restarted(
    kafka: KafkaEnv, pg_url: str, server: FeedServer, tmp_path: Path
) -> None:
    pipe = FaultPipeline(
        bootstrap=kafka.bootstrap,
        database_url=pg_url,
        prefix=kafka.prefix,
        logs=tmp_path,
        MR_INGEST_ALLOWED_NETWORKS="127.0.0.1",
        MR_INGEST_SOURCES_REFRESH_S="0.5",
        MR_INGEST_LEASE_S="5",
        # Near-duplicate detection would link look-alike test entries to each other (stored, not routed),
        # and which one counts as the original could differ between a first and a repeated publication.
        MR_INGEST_NEAR_DUPLICATES="false",
    )
    await pipe.create_topics()
    guids: dict[str, str] = {}
    for i in range(FEEDS):
        entries = make_entries(PER_FEED, prefix=f"{kafka.prefix}f{i}", seed=i)
        body = atom(entries, title=f"Feed {i}") if i % 2 else rss(entries, title=f"Feed {i}")
        url = server.serve(f"/feeds/{i}.xml", body, delay=0.12)
        source_id = await register(
            pipe.settings, SourceSpec(name=f"Feed {i}", url=url, influence=1 + i % 3, poll_interval_s=3600)
        )
        guids.update({mention_id(source_id, e.guid): e.guid for e in entries})
    assert len(guids) == N
    raw = pipe.settings.topic_raw
    try:
        pipe.start("classifier")
        pipe.start("router")
        pipe.start("ingest")

        async def a_third_published() -> bool:
            pipe.procs.check_alive()
            return await end_offsets_total(kafka.bootstrap, raw) >= N // 3

        await wait_for(
            a_third_published, within=60, what="a third of the entries on mentions.raw", interval=0.05
        )
        published_at_kill = await end_offsets_total(kafka.bootstrap, raw)
        assert published_at_kill < N, "ingest finished before it could be killed"
        assert pipe.procs.kill("ingest") == -9
        pipe.start("ingest", "ingest-restarted")
        await pipe.wait_stored(N, within=120)
        records = await read_topics(kafka.bootstrap, [raw])
        events: dict[str, MentionIngested] = {}
        for r in records:
            record = Record(r.topic, r.partition, r.offset, r.key.decode(), r.value)
            event = decode(record, MentionIngested)
            events.setdefault(event.mention.id, event)
        assert events.keys() == guids.keys()
        expected = expected_departments((e.mention for e in events.values()), pipe.settings)
        outcome = await pipe.outcome("SIGKILL ingest mid-poll", expected)
        outcome.notes["published_at_kill"] = published_at_kill
        outcome.notes["raw_records"] = len(records)
        outcome.notes["republished"] = len(records) - N
    finally:
        codes = await pipe.close()
    outcome.assert_delivered()
    assert outcome.dead_lettered == 0
    assert codes == dict.fromkeys(codes, 0), codes
