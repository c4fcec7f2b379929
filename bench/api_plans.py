"""EXPLAIN (ANALYZE, BUFFERS) of the SQL the API sends for its lists, queue statistics and details, and
the plans' summary in the bench's table."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import event

from bench.api_workload import SCOPED_DEPARTMENT, Catalog
from shared.settings import Settings

_Call = Callable[[Any, Any], Any]  # (session, principal) -> the route function's answer


async def plans(db_url: str, catalog: Catalog) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of every statement the list, queue and detail routes send, recorded
    while the route functions run on this process's own engine with the API's code."""
    from shared.db import create_engine

    # The API's own session settings (services/api/app.py), so that the plans are the ones it gets.
    workers = Settings().api_database_parallel_workers
    engine = create_engine(db_url, server_settings={"max_parallel_workers_per_gather": str(workers)})
    try:
        return await _explain_cases(engine, _cases(catalog))
    finally:
        await engine.dispose()


def _cases(catalog: Catalog) -> list[tuple[str, Any, _Call]]:
    """(name, principal, call) of every request explained: lists, queue statistics and a detail."""
    from services.api.mention_filters import Filters, Sort
    from services.api.mentions import get_mention, list_mentions
    from services.api.queries.mentions import encode_cursor
    from services.api.queues import queues
    from shared.apikeys import Principal

    admin = Principal(key_id=None, name="bench", scopes=frozenset({"admin"}))
    scoped = Principal(key_id=None, name="bench-scoped", scopes=frozenset({f"write:{SCOPED_DEPARTMENT}"}))
    routed_at, mention_id = catalog.deep[len(catalog.deep) // 2]
    deep = encode_cursor(Sort.ROUTED_DESC, routed_at, mention_id)
    cases: list[tuple[str, Any, _Call]] = []

    def listing(name: str, principal: Principal, params: dict[str, Any], cursor: str | None = None) -> None:
        f = Filters.model_validate(params)

        async def call(session: Any, p: Principal) -> Any:
            request: Any = SimpleNamespace(headers={}, scope={})
            return await list_mentions(
                request=request,
                session=session,
                principal=p,
                f=f,
                sort=Sort.ROUTED_DESC,
                cursor=cursor,
                limit=50,
            )

        cases.append((name, principal, call))

    listing("list: newest first (admin)", admin, {})
    listing(f"list: newest first ({SCOPED_DEPARTMENT} key)", scoped, {})
    listing("list: department=pr", admin, {"department": ["pr"]})
    listing("list: status=acknowledged", admin, {"status": ["acknowledged"]})
    listing("list: department=support, status=new", admin, {"department": ["support"], "status": ["new"]})
    listing("list: topic=security", admin, {"topic": ["security"]})
    listing(f"list: topic=bug ({SCOPED_DEPARTMENT} key)", scoped, {"topic": ["bug"]})
    listing("list: department=rnd, overdue", admin, {"department": ["rnd"], "overdue": True})
    listing("list: department=support, priority=P1", admin, {"department": ["support"], "priority": ["P1"]})
    listing("list: department=product, priority=P1", admin, {"department": ["product"], "priority": ["P1"]})
    listing("list: q=refund", admin, {"q": "refund"})
    listing('list: q="dark mode" OR offline', admin, {"q": '"dark mode" OR offline'})
    listing("list: q=refund, deep page", admin, {"q": "refund"}, deep)
    listing("list: deep page (cursor in the middle of the range)", admin, {}, deep)
    listing("list: department=pr, deep page", admin, {"department": ["pr"]}, deep)

    async def queue_stats(session: Any, p: Principal) -> Any:
        # A fresh app state each time: the median (cached per process for a minute) is computed too.
        request: Any = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace()), headers={}, scope={})
        settings = Settings().model_copy(update={"api_queue_stats_max_age_s": 0})
        return await queues(
            request=request, session=session, principal=p, settings=settings, window_hours=168
        )

    cases.append(("queues: all departments (admin)", admin, queue_stats))
    cases.append((f"queues: {SCOPED_DEPARTMENT} key", scoped, queue_stats))

    async def detail(session: Any, p: Principal) -> Any:
        request: Any = SimpleNamespace(headers={}, scope={})
        return await get_mention(
            request=request, session=session, principal=p, mention_id=catalog.admin_ids[0]
        )

    cases.append(("detail (admin)", admin, detail))
    return cases


async def _explain_cases(engine: Any, cases: list[tuple[str, Any, _Call]]) -> dict[str, Any]:
    """Run each case, recording the statements it sends; then explain each one as recorded."""
    from shared.db import session_factory

    recorded: list[tuple[str, Any]] = []
    recording = False

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, _many: bool) -> None:
        if recording:
            recorded.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    out: dict[str, Any] = {}
    # SQLAlchemy's path for every read (services/api/queries/driver.py), so that each statement is seen.
    sessions = session_factory(engine, info={"driver_reads": False})
    for name, principal, call in cases:
        recorded.clear()
        recording = True
        async with sessions() as session:
            await call(session, principal)
        recording = False
        explained = await _explain(engine, list(recorded))
        out[name] = {
            "statements": len(explained),
            "execution_ms_total": round(sum(e["execution_ms"] or 0.0 for e in explained), 2),
            "explained": explained,
        }
    return out


async def _explain(engine: Any, statements: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """EXPLAIN (ANALYZE, BUFFERS) of each statement with its parameters, run twice: the first run warms
    the caches, the second is the one kept."""
    explained: list[dict[str, Any]] = []
    async with engine.connect() as conn:
        for statement, parameters in statements:
            sql = f"EXPLAIN (ANALYZE, BUFFERS) {statement}"
            await conn.exec_driver_sql(sql, parameters)  # the first run warms the caches
            text = "\n".join(r[0] for r in await conn.exec_driver_sql(sql, parameters))
            explained.append(
                {
                    "sql": statement,
                    "parameters": [_jsonable(p) for p in parameters or ()],
                    "plan": text,
                    "key_lines": key_lines(text),
                    "execution_ms": _execution_ms(text),
                }
            )
    return explained


_KEY = re.compile(
    r"(Limit|Index Scan|Index Only Scan|Bitmap Heap Scan|Bitmap Index Scan|Seq Scan|Nested Loop|"
    r"Hash Join|Hash Semi Join|Hash Anti Join|Merge Join|Sort|Incremental Sort|Aggregate|"
    r"GroupAggregate|HashAggregate|Gather|Filter:|Index Cond:|Rows Removed|Heap Fetches|"
    r"Execution Time|Planning Time|JIT:|Timing:)"
)


def key_lines(plan: str) -> list[str]:
    """The lines that say how a plan runs: nodes, index conditions, filters, rows removed, times."""
    return [line.rstrip() for line in plan.splitlines() if _KEY.search(line)]


def _execution_ms(plan: str) -> float | None:
    found = re.search(r"Execution Time: ([\d.]+) ms", plan)
    return float(found.group(1)) if found else None


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)


def plan_table(explained: dict[str, Any]) -> str:
    lines = ["  query plans (EXPLAIN ANALYZE, warm cache): statements, database time"]
    for name, p in explained.items():
        lines.append(f"    {name}: {p['statements']} statements, {p['execution_ms_total']:.2f} ms")
        for e in p["explained"]:
            scans = [
                ln.strip() for ln in e["key_lines"] if re.search(r"Scan|Limit|Join|Aggregate|Nested Loop", ln)
            ]
            lines.append(f"      {e['execution_ms']:.2f} ms  " + " | ".join(_short(s) for s in scans[:4]))
    return "\n".join(lines) + "\n"


def _short(node: str) -> str:
    node = node.lstrip("-> ").strip()
    node = re.sub(r"\(cost=[^)]*\)\s*", "", node)
    return node
