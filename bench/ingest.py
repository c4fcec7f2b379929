"""Ingest benchmark (`python -m bench.ingest`): normalisation per core, and 200 feeds x 50 entries to
`mentions.raw` through a real ingest process, the real broker and PostgreSQL, with its peak RSS.

Targets (issue 3): normalisation >= 5,000 entries/s per core; 10,000 entries from 200 feeds on
`mentions.raw` within 10 s; ingest RSS < 150 MB. Judged here as printed figures, never in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from bench.infra import backing_services, create_database, drop_database, memory_mb
from devsupport.factories import make_entries, rss
from devsupport.feedserver import FeedServer, feed_server
from devsupport.kafka import end_offsets_total
from services.ingest.feeds import SourceInfo, parse
from shared.db import SourceRow, create_engine, migrate, session_factory
from shared.settings import REPO_ROOT


def normalisation_rate(seconds: float = 3.0) -> dict[str, float]:
    """Entries per second through parse (feedparser) + normalise, on one core, 50-entry feeds."""
    body = rss(make_entries(50, prefix="bench"))
    source = SourceInfo(
        id="s", name="s", url="https://x.example/feed", kind="feed", influence=1, language=None
    )
    now = datetime.now(UTC)
    parse(body, source, now=now)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        n += len(parse(body, source, now=now).mentions)
    elapsed = time.perf_counter() - start
    return {"entries_per_s": n / elapsed, "bytes_per_entry": len(body) / 50}


async def feeds_to_topic(*, feeds: int, per_feed: int, within_s: float = 120.0) -> dict[str, Any]:
    bootstrap, server_url = backing_services()
    prefix = f"bi{uuid.uuid4().hex[:8]}."
    db_name = f"mr_bench_ingest_{uuid.uuid4().hex[:8]}"
    db_url = await create_database(server_url, db_name)
    await migrate(db_url)
    proc: subprocess.Popen[bytes] | None = None
    try:
        with feed_server() as server:
            await _serve_feeds(server, db_url, feeds=feeds, per_feed=per_feed)
            env = {
                **os.environ,
                "MR_BUS": "kafka",
                "MR_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "MR_TOPIC_PREFIX": prefix,
                "MR_DATABASE_URL": db_url,
                "MR_INGEST_ALLOWED_NETWORKS": "127.0.0.1",
                "MR_INGEST_CONCURRENCY": os.environ.get("MR_INGEST_CONCURRENCY", "32"),
                "MR_INGEST_PER_HOST_CONCURRENCY": os.environ.get("MR_INGEST_PER_HOST_CONCURRENCY", "32"),
                "MR_LOG_LEVEL": "WARNING",
            }
            started = time.perf_counter()
            proc = subprocess.Popen(  # noqa: ASYNC220 - started once; the loop below polls it
                [sys.executable, "-m", "services.ingest"], cwd=REPO_ROOT, env=env
            )
            want = feeds * per_feed
            total = peak = 0.0
            first_at: float | None = None
            while time.perf_counter() - started < within_s:
                if proc.poll() is not None:
                    raise RuntimeError(f"ingest exited with {proc.returncode}")
                try:
                    total = await end_offsets_total(bootstrap, f"{prefix}mentions.raw")
                except AssertionError:
                    total = 0  # the topic does not exist yet
                if total and first_at is None:
                    first_at = time.perf_counter() - started
                peak = max(peak, memory_mb(proc.pid)[1])
                if total >= want:
                    break
                await asyncio.sleep(0.1)
            elapsed = time.perf_counter() - started
            peak = max(peak, memory_mb(proc.pid)[1])
            return {
                "feeds": feeds,
                "entries": want,
                "published": int(total),
                "seconds_from_process_start": round(elapsed, 2),
                "seconds_from_first_message": round(elapsed - (first_at or 0.0), 2),
                "entries_per_s": round(total / elapsed, 1),
                "rss_peak_mb": round(peak, 1),
            }
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(15)
        await drop_database(server_url, db_name)


async def _serve_feeds(server: FeedServer, db_url: str, *, feeds: int, per_feed: int) -> None:
    """`feeds` feeds of `per_feed` entries each on the local server, registered as sources (backfill all)."""
    now = datetime.now(UTC)
    rows = []
    for i in range(feeds):
        url = server.serve(f"/f{i}.xml", rss(make_entries(per_feed, prefix=f"f{i}", seed=i)))
        rows.append(
            {
                "id": uuid.uuid4().hex,
                "name": f"feed {i}",
                "url": url,
                "kind": "feed",
                "enabled": True,
                "poll_interval_s": 3600,
                "influence": 1,
                "created_at": now,
                "updated_at": now,
                "consecutive_failures": 0,
                "items_seen": 0,
                "backfill": "all",
            }
        )
    engine = create_engine(db_url)
    async with session_factory(engine)() as session, session.begin():
        await session.execute(insert(SourceRow), rows)
    await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--feeds", type=int, default=200)
    parser.add_argument("--per-feed", type=int, default=50)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results")
    args = parser.parse_args()
    result = {
        "normalisation": normalisation_rate(),
        "feeds_to_topic": asyncio.run(feeds_to_topic(feeds=args.feeds, per_feed=args.per_feed)),
    }
    print(json.dumps(result, indent=2))  # noqa: T201
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (args.out / f"ingest-{stamp}.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
