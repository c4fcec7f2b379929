"""Engines, sessions, migrations and the dialect-neutral bulk upsert."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import orjson
from sqlalchemy import JSON, Connection, String, Table, TypeDecorator, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine

from shared.db.models import Base, UtcDateTime

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


_CONNECT_TIMEOUT_S = 10.0


def _json_dumps(value: Any) -> str:
    # JSON columns through orjson instead of json.dumps: 15% of the router's CPU per mention (bench).
    # (OPT_NON_STR_KEYS: what json.dumps accepts, orjson accepts too.)
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def create_engine(
    url: str,
    *,
    pool_size: int = 5,
    server_settings: dict[str, str] | None = None,
    command_timeout: float | None = None,
    pre_ping: bool = True,
) -> AsyncEngine:
    """An async engine; SQLite gets WAL and a busy timeout so that several services can share it.
    `server_settings`: PostgreSQL settings for every session of this engine (ignored by SQLite).
    PostgreSQL connections give up after 10 s (asyncpg's default is 60): a server that accepts a
    connection and never answers while it restarts must cost a stage one retry, not a minute.
    `command_timeout`: the longest a statement may run (a stage's batch statements; None for the API,
    whose exports run as long as they need). `pre_ping`: test each connection with a round trip when
    it leaves the pool; the API turns it off (12 % of its CPU on a detail request): a connection found
    dead by a request invalidates the whole pool, so an outage costs one 503, not one per connection."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = _create_async_engine(
            url, connect_args={"timeout": 30}, json_serializer=_json_dumps, json_deserializer=orjson.loads
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return _create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=pre_ping,
        connect_args={
            "timeout": _CONNECT_TIMEOUT_S,
            **({"server_settings": server_settings} if server_settings else {}),
            **({"command_timeout": command_timeout} if command_timeout else {}),
        },
        json_serializer=_json_dumps,
        # orjson for reading JSON columns too: json.loads was 9 % of the API's CPU on the lists of
        # python -m bench.api_bench (four JSON columns a mention, two an assignment).
        json_deserializer=orjson.loads,
    )


def session_factory(
    engine: AsyncEngine, *, info: dict[str, Any] | None = None
) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, info=info)


async def insert_ignore(
    session: AsyncSession, model: type[Base], rows: Sequence[dict[str, Any]], *, keys: Sequence[str]
) -> None:
    """INSERT … ON CONFLICT (keys) DO NOTHING for every row, inside the session's transaction.

    PostgreSQL: one `INSERT … SELECT * FROM unnest(…)` with an array per column. Elsewhere (SQLite), and
    for rows that leave a Python-side default to SQLAlchemy: one cached Core statement run as an
    executemany. Never a multi-row VALUES clause, which SQLAlchemy compiles anew for every batch: that
    cost the router about 1 ms of CPU per mention (`make bench`, docs/performance.md)."""
    if not rows:
        return
    table = cast(Table, model.__table__)
    dialect = session.get_bind().dialect
    connection = await session.connection()
    if dialect.name == "postgresql":
        unnest = _unnest_insert(table, tuple(rows[0]), tuple(keys))
        if unnest is not None:
            sql, converters = unnest
            columns = [
                [row[name] for row in rows] if convert is None else [convert(row[name]) for row in rows]
                for name, convert in converters
            ]
            await connection.exec_driver_sql(sql, tuple(columns))
            return
    insert = postgresql.insert if dialect.name == "postgresql" else sqlite.insert
    stmt = insert(table).on_conflict_do_nothing(index_elements=keys)
    await connection.execute(stmt, list(rows))


class JsonText(str):
    """A JSON column's value already serialised (e.g. by pydantic): `insert_ignore_tables` sends it as it
    is instead of serialising it again."""

    __slots__ = ()


@dataclass(frozen=True)
class TableRows:
    """One table's rows for `insert_ignore_tables`, column by column: every list in `columns` holds one
    value per row (what the unnest arrays are made of, without a dictionary per row on the way);
    `constants` are the columns whose value is the same in every row, sent once."""

    model: type[Base]
    columns: Mapping[str, list[Any]]
    keys: tuple[str, ...]
    constants: Mapping[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()), ()))

    def rows(self) -> list[dict[str, Any]]:
        """The rows as dictionaries (the executemany path), JsonText parsed back for SQLAlchemy."""
        table = cast(Table, self.model.__table__)

        def python(name: str, values: list[Any]) -> list[Any]:
            if isinstance(table.columns[name].type, JSON):
                return [orjson.loads(str(v)) if isinstance(v, JsonText) else v for v in values]
            return values

        names = [*self.columns, *self.constants]
        values = [python(name, column) for name, column in self.columns.items()]
        values += [python(name, [value] * len(self)) for name, value in self.constants.items()]
        return [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]


async def insert_ignore_tables(
    sessions: async_sessionmaker[AsyncSession], tables: Sequence[TableRows]
) -> None:
    """INSERT … ON CONFLICT (keys) DO NOTHING of every table's rows, all or nothing.

    PostgreSQL: ONE statement for all the tables, one round trip (data-modifying CTEs, each an
    `INSERT … SELECT u.*, $k, … FROM unnest($1::type[], …) AS u`), run on its own: a single statement is
    a transaction by itself, so no BEGIN and COMMIT round trips. A row may reference another table's row
    of the same statement (foreign keys are checked at its end). Elsewhere (SQLite), or when a table's
    rows leave out a column with a Python-side default: `insert_ignore` per table, in order, in one
    transaction."""
    tables = [t for t in tables if len(t)]
    if not tables:
        return
    async with sessions() as session:
        if session.get_bind().dialect.name == "postgresql":
            plan = _unnest_statement(
                tuple(
                    (cast(Table, t.model.__table__), tuple(t.columns), tuple(t.constants), t.keys)
                    for t in tables
                )
            )
            if plan is not None:
                sql, converters = plan
                args: list[Any] = []
                for t, table_converters in zip(tables, converters, strict=True):
                    columns = [*t.columns.values(), *([v] for v in t.constants.values())]
                    for convert, values in zip(table_converters, columns, strict=True):
                        args.append(values if convert is None else convert(values))
                    if t.constants:  # sent as scalars
                        args[-len(t.constants) :] = [values[0] for values in args[-len(t.constants) :]]
                connection = await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
                await connection.exec_driver_sql(sql, tuple(args))
                return
        async with session.begin():
            for t in tables:
                await insert_ignore(session, t.model, t.rows(), keys=t.keys)


_ColumnConverter = Callable[[list[Any]], list[Any]]


@functools.cache
def _unnest_statement(
    tables: tuple[tuple[Table, tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...],
) -> tuple[str, list[list[_ColumnConverter | None]]] | None:
    """`WITH t0 AS (INSERT … unnest …), … INSERT … unnest …` over `tables` (table, array columns,
    constant columns, conflict keys), the parameters numbered on from one table to the next, and per
    column (arrays, then constants) how its values become what asyncpg sends. None when a table leaves
    out a column with a Python-side default."""
    inserts: list[str] = []
    converters: list[list[_ColumnConverter | None]] = []
    n = 0
    for table, names, constants, keys in tables:
        given = {*names, *constants}
        if any(c.name not in given and c.default is not None for c in table.columns):
            return None
        arrays, scalars = [], []
        for name in names:
            n += 1
            arrays.append(f"${n}::{_pg_type(table.columns[name].type)}[]")
        for name in constants:
            n += 1
            scalars.append(f", ${n}::{_pg_type(table.columns[name].type)}")
        quoted = ", ".join(f'"{c}"' for c in (*names, *constants))
        conflict = ", ".join(f'"{k}"' for k in keys)
        inserts.append(
            f'INSERT INTO "{table.name}" ({quoted}) SELECT u.*{"".join(scalars)} '
            f"FROM unnest({', '.join(arrays)}) AS u ON CONFLICT ({conflict}) DO NOTHING"
        )
        converters.append([_column_converter(table.columns[c].type) for c in (*names, *constants)])
    *ctes, last = inserts
    with_ = ", ".join(f"t{i} AS ({sql})" for i, sql in enumerate(ctes))
    return (f"WITH {with_} {last}" if ctes else last), converters


def _pg_type(column_type: Any) -> str:
    """The PostgreSQL type of a parameter for a column: a string without its length, since an explicit
    cast to VARCHAR(n) cuts a longer value silently, where the insert's own assignment to the column
    refuses it, as SQLAlchemy's insert does."""
    if type(column_type) is String and column_type.length:
        return "VARCHAR"
    return str(column_type.compile(dialect=_PG))


def _column_converter(column_type: Any) -> _ColumnConverter | None:
    """`_converter` for a whole column: JSON serialised (JsonText as it is); a UtcDateTime only checked
    for a time zone, since asyncpg itself sends an aware datetime as its UTC instant."""
    if isinstance(column_type, JSON):
        none_as_null = column_type.none_as_null

        def json_column(values: list[Any]) -> list[Any]:
            return [
                v if type(v) is JsonText else None if v is None and none_as_null else _json_dumps(v)
                for v in values
            ]

        return json_column
    if isinstance(column_type, UtcDateTime):

        def aware(values: list[Any]) -> list[Any]:
            for v in values:
                if v is not None and v.tzinfo is None:
                    raise ValueError("naive datetime given to a UtcDateTime column")
            return values

        return aware
    if isinstance(column_type, TypeDecorator):
        return lambda values: [column_type.process_bind_param(v, _PG) for v in values]
    return None


_Converter = Callable[[Any], Any]
_PG: Any = postgresql.dialect()  # type: ignore[no-untyped-call]


@functools.cache
def _unnest_insert(
    table: Table, names: tuple[str, ...], keys: tuple[str, ...]
) -> tuple[str, list[tuple[str, _Converter | None]]] | None:
    """PostgreSQL: `INSERT … SELECT * FROM unnest($1::type[], …) ON CONFLICT DO NOTHING`, one array per
    column and one statement per batch, and how to turn each column's values into what asyncpg sends.

    None when a column the rows leave out has a Python-side default, which only SQLAlchemy's own insert
    applies; those rows take the executemany path."""
    given = set(names)
    if any(c.name not in given and c.default is not None for c in table.columns):
        return None
    converters: list[tuple[str, _Converter | None]] = []
    casts: list[str] = []
    for i, name in enumerate(names, start=1):
        column = table.columns[name]
        casts.append(f"${i}::{_pg_type(column.type)}[]")
        converters.append((name, _converter(column.type)))
    quoted = ", ".join(f'"{n}"' for n in names)
    conflict = ", ".join(f'"{k}"' for k in keys)
    sql = (
        f'INSERT INTO "{table.name}" ({quoted}) SELECT * FROM unnest({", ".join(casts)}) '
        f"ON CONFLICT ({conflict}) DO NOTHING"
    )
    return sql, converters


def _converter(column_type: Any) -> _Converter | None:
    """What SQLAlchemy's bind processing does for a value of this type, for the unnest arrays."""
    if isinstance(column_type, JSON):
        none_as_null = column_type.none_as_null
        return lambda v: None if v is None and none_as_null else _json_dumps(v)
    if isinstance(column_type, TypeDecorator):
        return lambda v: column_type.process_bind_param(v, _PG)
    return None  # sent as it is


def _alembic_config(connection: Connection) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


async def migrate(url: str, revision: str = "head") -> None:
    """Bring the database at `url` to `revision` (Alembic). A step before services start."""
    from alembic import command

    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda sync_conn: command.upgrade(_alembic_config(sync_conn), revision))
    finally:
        await engine.dispose()


async def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())
    finally:
        await engine.dispose()


def migrate_sync(url: str) -> None:
    asyncio.run(migrate(url))
