"""The API's hottest reads on PostgreSQL, straight through asyncpg.

A list page or a mention's detail took 3-6 ms of the API's CPU per request, most of it in SQLAlchemy's ORM
layer around five cheap statements: building the expressions, their cache keys, ORM result processing, a
type processor per value (python -m bench.api_bench, docs/performance.md). The fixed-shape statements of
those reads are written here once as SQL over the models' own column names and run on the session's
asyncpg connection (its prepared-statement cache); the result is the same values the ORM would give
(asyncpg returns `timestamptz` in UTC and decodes JSON with the engine's codec). Other databases (SQLite,
the embedded default) take the SQLAlchemy path beside each caller; the API tests run both.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar, cast

from sqlalchemy import Column, Table
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Select
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.util import LRUCache

T = TypeVar("T")

# Compiled statements by their SQLAlchemy cache key: the list's statement differs by filter combination.
_COMPILED: LRUCache[Any, Any] = LRUCache(500)


async def connection(session: AsyncSession) -> Any | None:
    """The session's asyncpg connection, or None on another database (or for a session made with
    `info={"driver_reads": False}`, e.g. by the bench's EXPLAIN, which records SQLAlchemy's statements)."""
    if session.get_bind().dialect.name != "postgresql" or session.info.get("driver_reads") is False:
        return None
    conn = await session.connection()
    raw = await conn.get_raw_connection()
    return raw.driver_connection


async def fetch(session: AsyncSession, statement: Select[Any]) -> Sequence[Mapping[str, Any]]:
    """The rows of a Core `statement` (built per request, like the list's) as mappings: on PostgreSQL
    compiled once per shape, as SQLAlchemy's own statement cache does it, and run through asyncpg with
    this request's values; elsewhere executed by SQLAlchemy. (SQLAlchemy's execution around a compiled
    statement was a third of a list's database CPU in the API process; tests/integration/
    test_api_mentions.py runs every filter on both paths.)"""
    pg = await connection(session)
    if pg is None:
        result = await (await session.connection()).execute(statement)
        return [row._mapping for row in result]
    dialect = session.get_bind().dialect
    compiled_any, extracted, _, _ = statement._compile_w_cache(
        dialect, compiled_cache=_COMPILED, column_keys=[], for_executemany=False, schema_translate_map=None
    )
    compiled = cast(SQLCompiler, compiled_any)
    params = compiled.construct_params(extracted_parameters=extracted, escape_names=False)
    expanded = compiled._process_parameters_for_postcompile(params)  # IN lists, literal_execute
    processors: Mapping[str, Any] = compiled._bind_processors
    args = []
    for name in expanded.positiontup or ():
        value = expanded.parameters[name]
        process = processors.get(name)
        args.append(process(value) if process is not None else value)
    rows: Sequence[Mapping[str, Any]] = await call(session, pg.fetch, expanded.statement, *args)
    return rows


async def call(session: AsyncSession, method: Callable[..., Awaitable[T]], sql: str, *args: Any) -> T:
    """`method(sql, *args)` on the session's asyncpg connection, its failure as SQLAlchemy would report it.

    asyncpg's own errors do not reach SQLAlchemy, which would neither answer them with a 503
    (services/api/errors.py) nor notice a dead connection. So after a failure the connection is asked
    `SELECT 1` through SQLAlchemy: a dead one raises SQLAlchemy's error, and SQLAlchemy invalidates the
    pool's connections (the API's pool has no pre-ping: an outage costs one failed request); a live one
    leaves the statement's own error, raised as a DBAPIError."""
    try:
        return await method(sql, *args)
    except Exception as exc:
        connection = await session.connection()
        await connection.exec_driver_sql("SELECT 1")
        raise DBAPIError(sql, args, exc) from exc


def columns(table: Any, names: Iterable[str] | None = None) -> str:
    """`names` of `table` (default: every column) as a select list, checked against the model."""
    t: Table = table.__table__ if hasattr(table, "__table__") else table
    cols: list[Column[Any]] = list(t.columns) if names is None else [t.columns[n] for n in names]
    return ", ".join(f"{t.name}.{c.name}" for c in cols)


class Row:
    """A driver row read by attribute, as the public models read ORM rows (schemas.RowModel)."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = values

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None
