"""A realistic database for the API benchmark: N mentions as the router stores them, with their topics,
their assignments at every stage of the workflow, and recent activity, written with COPY.

Texts come from bench/generate.py's generator (300-1,500 characters), classified by the rule engine and
routed by config/routing.yaml, exactly the columns services/router/service.py `_store` writes. Classifying
a million texts would take ten minutes, so a pool of templates is classified once (20,000 for a million
mentions) and every mention takes one, with its own id, URL and times: the labels always fit the text.

Time: routed_at spread evenly over the 90 days before generation. Each assignment gets a lifecycle drawn
from its SLA (acknowledged, responded, resolved or dismissed after log-normal delays; a few reopened,
reassigned, or never handled) and its status is the last step reached by the time of generation, so old
assignments are mostly resolved or dismissed, recent ones open, and some past their SLA (overdue, with
the escalation level the router would have reached). At most two assignments a mention (the decision's
primary and the next). Activity rows and replies for the assignments of the last two weeks.

Secondary indexes are dropped during the COPY and created again from their own definitions afterwards
(pg_indexes), foreign-key triggers are off while loading (the data is consistent by construction), and
every table is vacuumed and analysed at the end, as autovacuum would have on a database that grew slowly.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy.engine import make_url

from bench.api_lifecycle import lifecycle
from bench.generate import AUTHORS, SOURCES, TITLES, mention_text
from shared.classify import RuleEngine, Taxonomy
from shared.events import Mention, MentionKind
from shared.routing import RuleSet
from shared.settings import REPO_ROOT

DAYS = 90
MAX_ASSIGNMENTS = 2
ACTIVITY_DAYS = 14
CHUNK = 20_000
TABLES = ("mentions", "mention_topics", "assignments", "activity", "replies")
# The namespace of the benchmark's mention ids (any fixed UUID: ids only need to be unique and stable).
_NS = uuid.UUID("6f1d3c1e-8c2b-5b8e-9a53-6d0f4b2a9c11")


@dataclass(frozen=True)
class Template:
    """A classified and routed mention without identity or time."""

    source: int
    kind: str
    title: str
    text: str
    author: str
    content_hash: str
    sentiment: str
    sentiment_score: float
    language: str
    intent: str
    urgency: float
    topics: tuple[str, ...]
    topics_json: str
    classification_json: str
    matched_rules_json: str
    tags_json: str
    # (department, priority, sla_minutes, rules as JSON), primary first
    assignments: tuple[tuple[str, str, int, str], ...]


def templates(n: int, *, seed: int) -> list[Template]:
    """`n` generated mentions, classified by the rule engine and routed by config/routing.yaml."""
    taxonomy = Taxonomy.from_file(REPO_ROOT / "config" / "taxonomy.yaml")
    engine = RuleEngine(taxonomy)
    rules = RuleSet.from_file(REPO_ROOT / "config" / "routing.yaml", known_topics=taxonomy.topics)
    rng = random.Random(seed)
    now = datetime.now(UTC)
    out: list[Template] = []
    for i in range(n):
        source = rng.randrange(SOURCES)
        is_comment = rng.random() < 0.4
        text = mention_text(rng)
        mention = Mention(
            id=f"template-{i}",
            source_id=f"bench-src-{source:02d}",
            source_name=f"Bench blog {source:02d}",
            kind=MentionKind.COMMENT if is_comment else MentionKind.POST,
            url=f"https://blog{source:02d}.example.net/t/{i}",
            title="" if is_comment else rng.choice(TITLES),
            text=text,
            author=rng.choice(AUTHORS),
            published_at=now,
            influence=1 + source % 3,
        )
        c = engine.classify(mention)
        decision = rules.evaluate(mention, c)
        out.append(
            Template(
                source=source,
                kind=mention.kind.value,
                title=mention.title,
                text=text,
                author=mention.author,
                content_hash=hashlib.sha256(f"{mention.title}\n{text}".encode()).hexdigest(),
                sentiment=c.sentiment.value,
                sentiment_score=c.sentiment_score,
                language=c.language,
                intent=c.intent.value,
                urgency=c.urgency,
                topics=tuple(t.name for t in c.topics),
                topics_json=orjson.dumps([t.name for t in c.topics]).decode(),
                classification_json=orjson.dumps(c.model_dump(mode="json")).decode(),
                matched_rules_json=orjson.dumps(list(decision.matched_rules)).decode(),
                tags_json=orjson.dumps(list(decision.tags)).decode(),
                assignments=tuple(
                    (
                        a.department.value,
                        a.priority.value,
                        a.sla_minutes,
                        orjson.dumps(list(a.rules)).decode(),
                    )
                    for a in decision.assignments[:MAX_ASSIGNMENTS]
                ),
            )
        )
    return out


# --- Rows -----------------------------------------------------------------------------------------------

MENTION_COLUMNS = (
    "id",
    "source_id",
    "source_name",
    "kind",
    "url",
    "title",
    "text",
    "author",
    "author_url",
    "content_hash",
    "published_at",
    "in_reply_to",
    "duplicate_of",
    "ingested_at",
    "classified_at",
    "routed_at",
    "sentiment",
    "sentiment_score",
    "language",
    "topics",
    "classification",
    "intent",
    "urgency",
    "influence",
    "language_hint",
    "rules_version",
    "matched_rules",
    "tags",
)
TOPIC_COLUMNS = ("mention_id", "topic")
ASSIGNMENT_COLUMNS = (
    "id",
    "mention_id",
    "department",
    "priority",
    "status",
    "sla_due_at",
    "assignee",
    "rules",
    "created_at",
    "updated_at",
    "sla_minutes",
    "tags",
    "claimed_at",
    "acknowledged_at",
    "first_response_at",
    "resolved_at",
    "closed_at",
    "escalation_level",
    "escalated_at",
    "next_escalation_at",
    "reassigned_to",
    "version",
    "routed_at",
)
ACTIVITY_COLUMNS = (
    "mention_id",
    "assignment_id",
    "department",
    "action",
    "actor",
    "from_status",
    "to_status",
    "detail",
    "at",
)
REPLY_COLUMNS = (
    "assignment_id",
    "mention_id",
    "department",
    "text",
    "url",
    "channel",
    "author",
    "created_at",
)
REPLY_TEXTS = [
    "Thanks for the report, we are looking into it and will update this thread.",
    "Sorry about that! A fix is rolling out today; clearing the cache should help meanwhile.",
    "Thank you for the kind words, we passed them on to the team.",
    "Good idea: it is on our roadmap, and we added your vote to it.",
]


@dataclass
class Chunk:
    mentions: list[tuple[Any, ...]]
    topics: list[tuple[Any, ...]]
    assignments: list[tuple[Any, ...]]
    activity: list[tuple[Any, ...]]
    replies: list[tuple[Any, ...]]


class RowMaker:
    """Rows for mentions [start, stop) of `total`, deterministic for the seed."""

    def __init__(self, pool: Sequence[Template], *, total: int, now: datetime, seed: int, run: str) -> None:
        self.pool = pool
        self.total = total
        self.now = now
        self.run = run
        self.rng = random.Random(seed + 1)
        self.first = now - timedelta(days=DAYS)
        self.span_s = (timedelta(days=DAYS) - timedelta(minutes=1)).total_seconds()
        self.activity_since = now - timedelta(days=ACTIVITY_DAYS)
        self.assignment_id = 0
        self.recent_ids: list[str] = []

    def chunk(self, start: int, stop: int) -> Chunk:
        rng, pool = self.rng, self.pool
        out = Chunk([], [], [], [], [])
        step = self.span_s / self.total
        for i in range(start, stop):
            t = pool[rng.randrange(len(pool))]
            mid = str(uuid.uuid5(_NS, f"{self.run}-{i}"))
            routed = self.first + timedelta(seconds=(i + rng.random()) * step)
            base = f"https://blog{t.source:02d}.example.net/{self.run}"
            duplicate_of = self._mention(out, t, i, mid, routed, base)
            if duplicate_of is not None:
                continue  # stored, linked to its original, not routed
            for assignment in t.assignments:
                self._assignment(out, mid, routed, f"{base}/{i}", t.tags_json, assignment)
        return out

    def _mention(self, out: Chunk, t: Template, i: int, mid: str, routed: datetime, base: str) -> str | None:
        """The mention's row and its topics' rows; the mention it duplicates (1 %), if any."""
        rng = self.rng
        classified = routed - timedelta(seconds=0.05 + rng.random() * 0.4)
        ingested = classified - timedelta(seconds=0.1 + rng.random() * 2)
        published = ingested - timedelta(seconds=min(3 * 86_400.0, rng.expovariate(1 / 10_800)))
        duplicate_of = (
            self.recent_ids[rng.randrange(len(self.recent_ids))]
            if self.recent_ids and rng.random() < 0.01
            else None
        )
        out.mentions.append(
            (
                mid,
                f"bench-src-{t.source:02d}",
                f"Bench blog {t.source:02d}",
                t.kind,
                f"{base}/{i}",
                t.title,
                t.text,
                t.author,
                "",
                t.content_hash,
                published,
                f"{base}/{i // 7}" if t.kind == "comment" else None,
                duplicate_of,
                ingested,
                classified,
                routed,
                t.sentiment,
                t.sentiment_score,
                t.language,
                t.topics_json,
                t.classification_json,
                t.intent,
                t.urgency,
                1 + t.source % 3,
                None,
                1,
                t.matched_rules_json,
                t.tags_json,
            )
        )
        out.topics.extend((mid, topic) for topic in t.topics)
        if len(self.recent_ids) < 1_000:
            self.recent_ids.append(mid)
        else:
            self.recent_ids[rng.randrange(1_000)] = mid
        return duplicate_of

    def _assignment(
        self,
        out: Chunk,
        mid: str,
        routed: datetime,
        url: str,
        tags_json: str,
        assignment: tuple[str, str, int, str],
    ) -> None:
        """One assignment's row (department, priority, SLA, rules as the template's decision has them), after
        its lifecycle; its activity and replies if it is recent. `url` is the mention's."""
        department, priority, sla_minutes, rules_json = assignment
        self.assignment_id += 1
        aid = self.assignment_id
        life = lifecycle(self.rng, department, priority, sla_minutes, routed, self.now)
        events = life.events or []
        out.assignments.append(
            (
                aid,
                mid,
                department,
                life.priority,
                life.status,
                life.sla_due_at,
                life.assignee,
                rules_json,
                routed,
                life.updated_at or routed,
                sla_minutes,
                tags_json,
                life.acknowledged_at,
                life.acknowledged_at,
                life.first_response_at,
                life.resolved_at,
                life.closed_at,
                life.escalation_level,
                life.escalated_at,
                life.next_escalation_at,
                life.reassigned_to,
                1 + len(events),
                routed,
            )
        )
        if routed < self.activity_since:
            return
        for action, from_status, to_status, at in events:
            actor = "router" if action == "escalate" else life.assignee or f"{department}-lead"
            detail = '{"reason": "sla"}' if action == "escalate" else "{}"
            out.activity.append((mid, aid, department, action, actor, from_status, to_status, detail, at))
            if action == "respond":
                out.replies.append(
                    (
                        aid,
                        mid,
                        department,
                        REPLY_TEXTS[self.rng.randrange(len(REPLY_TEXTS))],
                        f"{url}#reply-{aid}",
                        "blog-comment",
                        actor,
                        at,
                    )
                )


# --- Loading --------------------------------------------------------------------------------------------


async def connect(url: str) -> Any:
    import asyncpg  # type: ignore[import-untyped]

    u = make_url(url)
    return await asyncpg.connect(
        host=u.host, port=u.port, user=u.username, password=u.password, database=u.database
    )


async def _secondary_indexes(conn: Any) -> list[tuple[str, str]]:
    """(name, CREATE INDEX statement) of the indexes that back no constraint, on the loaded tables."""
    rows = await conn.fetch(
        "SELECT i.indexname, i.indexdef FROM pg_indexes i "
        "WHERE i.schemaname = 'public' AND i.tablename = ANY($1::text[]) "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname) "
        "ORDER BY i.tablename, i.indexname",
        list(TABLES),
    )
    return [(r["indexname"], r["indexdef"]) for r in rows]


async def load(
    url: str,
    *,
    mentions: int,
    seed: int = 20261126,
    pool_size: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Fill the (migrated, empty) database at `url`; what was written and how long each step took."""
    say = progress or (lambda _m: None)
    steps: dict[str, float] = {}
    started = time.perf_counter()
    pool_n = pool_size or max(500, min(20_000, mentions // 50))
    say(f"data: classifying and routing {pool_n:,} template mentions")
    pool = templates(pool_n, seed=seed)
    steps["templates_s"] = round(time.perf_counter() - started, 1)
    now = datetime.now(UTC).replace(microsecond=0)
    maker = RowMaker(pool, total=mentions, now=now, seed=seed, run=f"api{seed}")

    admin, writer, side = await connect(url), await connect(url), await connect(url)
    try:
        indexes = await _secondary_indexes(admin)
        for name, _ in indexes:
            await admin.execute(f'DROP INDEX "{name}"')
        for conn in (writer, side):
            # Foreign-key checks are triggers: off while loading rows that are consistent by construction.
            await conn.execute("SET session_replication_role = replica")
        t = time.perf_counter()
        counts = await _copy_rows(maker, mentions, writer, side, say)
        await admin.execute(f"SELECT setval('assignments_id_seq', {max(1, maker.assignment_id)})")
        await _recount(admin)
        steps["copy_s"] = round(time.perf_counter() - t, 1)

        say(f"data: creating {len(indexes)} secondary indexes again")
        t = time.perf_counter()
        await admin.execute("SET maintenance_work_mem = '512MB'")
        for _, definition in indexes:
            await admin.execute(definition)
        steps["indexes_s"] = round(time.perf_counter() - t, 1)

        say("data: VACUUM ANALYZE")
        t = time.perf_counter()
        for table in TABLES:
            await admin.execute(f"VACUUM (ANALYZE) {table}")
        steps["vacuum_analyze_s"] = round(time.perf_counter() - t, 1)
        sizes, database_mb = await _sizes(admin)
    finally:
        for conn in (admin, writer, side):
            await conn.close()
    steps["total_s"] = round(time.perf_counter() - started, 1)
    return {
        "mentions": counts["mentions"],
        "rows": counts,
        "templates": pool_n,
        "generated_at": now.isoformat(),
        "days": DAYS,
        "seed": seed,
        "assignments_per_mention": round(counts["assignments"] / max(1, counts["mentions"]), 2),
        "seconds": steps,
        "database_mb": database_mb,
        "table_mb": sizes,
        "indexes_rebuilt": [name for name, _ in indexes],
    }


async def _copy_rows(
    maker: RowMaker, mentions: int, writer: Any, side: Any, say: Callable[[str], None]
) -> dict[str, int]:
    """COPY the rows, a chunk at a time: mentions on `writer` while `side` takes the other tables (both
    without foreign-key triggers), and the next chunk is made meanwhile. The rows written, by table."""
    counts = dict.fromkeys(TABLES, 0)
    pending: list[asyncio.Task[Any]] = []
    for start in range(0, mentions, CHUNK):
        chunk = maker.chunk(start, min(mentions, start + CHUNK))
        await asyncio.gather(*pending)
        pending = [
            asyncio.create_task(_copy(writer, "mentions", MENTION_COLUMNS, chunk.mentions)),
            asyncio.create_task(_copy_many(side, chunk)),
        ]
        counts["mentions"] += len(chunk.mentions)
        counts["mention_topics"] += len(chunk.topics)
        counts["assignments"] += len(chunk.assignments)
        counts["activity"] += len(chunk.activity)
        counts["replies"] += len(chunk.replies)
        if (start // CHUNK) % 10 == 9:
            say(f"data: {counts['mentions']:,} of {mentions:,} mentions")
    await asyncio.gather(*pending)
    return counts


async def _recount(admin: Any) -> None:
    """The per-queue counts, which triggers keep (migration 0007): session_replication_role switched them
    off for the COPY."""
    if await admin.fetchval("SELECT to_regclass('assignment_counts')") is not None:
        await admin.execute("DELETE FROM assignment_counts")
        await admin.execute(
            "INSERT INTO assignment_counts (department, status, priority, n) SELECT department, "
            "status, priority, count(*) FROM assignments GROUP BY department, status, priority"
        )


async def _sizes(admin: Any) -> tuple[dict[str, float], float]:
    """Each loaded table's size and the database's, in MB."""
    sizes = {
        r["relname"]: round(r["bytes"] / 1e6, 1)
        for r in await admin.fetch(
            "SELECT c.relname, pg_total_relation_size(c.oid) AS bytes FROM pg_class c "
            "WHERE c.relname = ANY($1::text[]) AND c.relkind = 'r'",
            list(TABLES),
        )
    }
    database_mb = round(int(await admin.fetchval("SELECT pg_database_size(current_database())")) / 1e6, 1)
    return sizes, database_mb


async def _copy(conn: Any, table: str, columns: Sequence[str], records: list[tuple[Any, ...]]) -> None:
    if records:
        await conn.copy_records_to_table(table, records=records, columns=list(columns))


async def _copy_many(conn: Any, chunk: Chunk) -> None:
    # mention_topics and assignments reference mentions, which another connection loads at the same
    # time: with the foreign-key triggers off, the order does not matter.
    await _copy(conn, "mention_topics", TOPIC_COLUMNS, chunk.topics)
    await _copy(conn, "assignments", ASSIGNMENT_COLUMNS, chunk.assignments)
    await _copy(conn, "activity", ACTIVITY_COLUMNS, chunk.activity)
    await _copy(conn, "replies", REPLY_COLUMNS, chunk.replies)
