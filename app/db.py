"""Engine and session factory.

One request is one session: the dependency in :mod:`app.deps` commits or rolls back, and
services only ``flush()``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson
from sqlalchemy import JSON, DateTime, Executable, Table, TypeDecorator, event, insert, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, SessionTransaction

from app.compact import CompactJSON, Digest


def _configure_sqlite(sync_engine: Engine) -> None:
    """WAL, enforced foreign keys, and ``BEGIN IMMEDIATE``.

    pysqlite's own transaction handling starts transactions lazily and never takes the
    write lock up front; two writers can then both read the audit head and one fails with
    "database is locked" when it upgrades. Taking the write lock at ``BEGIN`` serialises
    writers cleanly behind ``busy_timeout`` (the SQLAlchemy-documented recipe).
    """

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # Erased keys are overwritten, not just unlinked, in the database file.
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def json_dumps(value: Any) -> str:
    """How JSON columns are written: orjson, several times faster than the standard library
    (intake writes a dozen JSON values per screening). Non-string keys become strings, as
    with the standard encoder; integers beyond 64 bits are refused (none of our columns
    holds one)."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    kwargs.setdefault("json_serializer", json_dumps)
    # A database error's text would otherwise quote the statement's values (case codes,
    # encrypted fields, a whole intake group's JSON document) wherever it is printed.
    kwargs.setdefault("hide_parameters", True)
    if url.startswith("sqlite"):
        engine = create_async_engine(url, **kwargs)
        _configure_sqlite(engine.sync_engine)
        return engine
    kwargs.setdefault("pool_size", 20)
    kwargs.setdefault("max_overflow", 10)
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(url, **kwargs)


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def purge_dead_rows(engine: AsyncEngine) -> None:
    """After an erasure, push the old row versions that still held the wrapped key out of
    the database files: SQLite copies WAL frames back and truncates the WAL (secure_delete
    has zeroed the freed cells); PostgreSQL vacuums the subjects table. Best effort: a busy
    reader can delay it, and both engines overwrite the space in time regardless."""
    if engine.dialect.name == "sqlite":
        import aiosqlite

        # Outside any transaction (the engine's connections always BEGIN IMMEDIATE).
        async with aiosqlite.connect(str(engine.url.database)) as raw:
            await raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return
    async with engine.connect() as conn:
        autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.exec_driver_sql("VACUUM subjects")


async def insert_rows(
    session: AsyncSession, table: Table, rows: Sequence[Mapping[str, Any]]
) -> None:
    """INSERT plain rows (column name -> value) into ``table`` in one statement, in the
    caller's transaction; no ORM objects are made (the cheapest way to write many rows).
    Every row must have the same columns. On PostgreSQL the rows travel as one JSON
    document (see :func:`bulk_insert`)."""
    if rows:
        await session.execute(*bulk_insert(session.get_bind().dialect.name, table, rows))


def insert_rows_sync(session: Session, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """:func:`insert_rows` for code that runs inside ``run_sync`` or a session event."""
    if rows:
        session.execute(*bulk_insert(session.get_bind().dialect.name, table, rows))


async def insert_new_rows(
    session: AsyncSession,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    unique: tuple[str, ...],
) -> set[Any]:
    """INSERT the rows whose ``unique`` columns are not taken yet (``ON CONFLICT (unique) DO
    NOTHING``) and return the ids of those inserted, in one statement: a replay or a race
    shows up as a missing id, with no read before the write."""
    if not rows:
        return set()
    statement, parameters = bulk_insert(session.get_bind().dialect.name, table, rows, unique=unique)
    return set((await session.execute(statement, parameters)).scalars())


def bulk_insert(
    dialect: str,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    unique: tuple[str, ...] | None = None,
) -> tuple[Executable, Any]:
    """The statement and parameters that insert ``rows`` into ``table`` (skipping conflicts
    on ``unique`` and returning the inserted ids, when given).

    On PostgreSQL the rows are sent as one JSON array, which the server turns into rows
    (``jsonb_populate_recordset``): one orjson call for the whole group instead of
    SQLAlchemy's and asyncpg's work on each value (docs/performance.md, step 17: about a
    tenth less CPU for intake's group write and commit). What is stored is what the generic
    statement stores, value for value; ``tests/test_db.py`` holds the two paths to that for
    every table intake writes. Elsewhere, or when a column left out has a Python-side
    default the server cannot apply, it is the generic multi-row INSERT.
    """
    keys = tuple(rows[0])
    populate = _populate(table, keys, unique) if dialect == "postgresql" else None
    if populate is None:
        return _generic_insert(dialect, table, unique), list(rows)
    first = rows[0].keys()
    for row in rows:
        if row.keys() != first:
            raise ValueError(f"rows for {table.name} differ in their columns")
        for name in populate.aware:
            value = row[name]
            if value is not None and value.tzinfo is None:
                raise ValueError("naive datetime reached the database")
    if populate.packed:
        # Columns stored as bytes through a type of app.compact: converted here, as the
        # generic statement's bind processing would.
        rows = [
            {
                **row,
                **{name: kind.process_bind_param(row[name], _PG) for name, kind in populate.packed},
            }
            for row in rows
        ]
    try:
        payload = orjson.dumps(rows, default=_other)
    except TypeError:
        # A JSON value with a non-string key (which json_dumps writes as a string); sorting
        # that out on every row costs a third more, so only when it is there.
        payload = orjson.dumps(rows, default=_other, option=orjson.OPT_NON_STR_KEYS)
    return populate.statement, {"rows": payload.decode()}


def _other(value: Any) -> str:
    """What orjson does not write itself: bytes, in bytea's hex text form (as
    ``jsonb_populate_recordset`` reads it), and UUID subclasses (asyncpg returns its own)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} cannot be written to the database as JSON")


@dataclass(frozen=True, slots=True)
class _Populate:
    statement: Executable
    #: The datetime columns among the keys: a naive value would be read in the server's
    #: time zone, so it is refused, as UTCDateTime refuses it on the generic path.
    aware: tuple[str, ...]
    #: The columns whose type turns the value into bytes (app.compact), with that type.
    packed: tuple[tuple[str, TypeDecorator[Any]], ...] = ()


_PG = PGDialect()  # type: ignore[no-untyped-call]  # (untyped in SQLAlchemy)


@cache
def _populate(
    table: Table, keys: tuple[str, ...], unique: tuple[str, ...] | None
) -> _Populate | None:
    columns = [table.c[key] for key in keys]
    if any(c.default is not None for c in table.columns if c.name not in keys):
        return None  # the server would store NULL where SQLAlchemy fills in the default
    quote = _PG.identifier_preparer.quote
    name = _PG.identifier_preparer.format_table(table)
    selected = []
    for column in columns:
        value = f"r.{quote(column.name)}"
        if isinstance(column.type.dialect_impl(_PG), JSON):
            # SQLAlchemy's JSON type stores None as JSON null, not SQL NULL; a JSON null
            # in the document would become SQL NULL here.
            value = f"coalesce({value}, CAST('null' AS jsonb))"
        selected.append(value)
    # Identifiers from the table's metadata, quoted by the dialect; values go as a parameter.
    sql = (
        f"INSERT INTO {name} ({', '.join(quote(c.name) for c in columns)}) "  # noqa: S608
        f"SELECT {', '.join(selected)} "
        f"FROM jsonb_populate_recordset(CAST(NULL AS {name}), CAST(:rows AS jsonb)) AS r"
    )
    statement: Executable = text(sql)
    if unique is not None:
        conflict = ", ".join(quote(key) for key in unique)
        statement = text(f"{sql} ON CONFLICT ({conflict}) DO NOTHING RETURNING id").columns(
            table.c.id
        )
    aware = tuple(c.name for c in columns if isinstance(getattr(c.type, "impl", c.type), DateTime))
    packed = tuple((c.name, c.type) for c in columns if isinstance(c.type, CompactJSON | Digest))
    return _Populate(statement, aware, packed)


@cache
def _generic_insert(dialect: str, table: Table, unique: tuple[str, ...] | None) -> Executable:
    """One statement object per table, so its cache key is computed once. Executed with a
    list of rows, SQLAlchemy sends it as one multi-row INSERT."""
    if unique is None:
        return insert(table)
    dialect_insert = pg_insert if dialect == "postgresql" else sqlite_insert
    return (
        dialect_insert(table)
        .on_conflict_do_nothing(index_elements=list(unique))
        .returning(table.c.id)
    )


# -- work that waits for the commit ----------------------------------------------------------

_ON_COMMIT = "ruta.on_commit"


def on_commit(session: AsyncSession, callback: Callable[[], None]) -> None:
    """Run ``callback`` once the session's outermost transaction has committed; never if the
    transaction, or the savepoint, it was registered in is rolled back. For what must only
    count what was stored (the decision metrics): a savepoint's release is not a commit."""
    sync = session.sync_session
    transaction = sync.get_nested_transaction() or sync.get_transaction()
    sync.info.setdefault(_ON_COMMIT, []).append((transaction, callback))


def within(tagged: SessionTransaction | None, ended: SessionTransaction) -> bool:
    """Whether ``tagged`` is ``ended`` or nested inside it (a rollback of ``ended`` undid it)."""
    current = tagged
    while current is not None:
        if current is ended:
            return True
        current = current.parent
    return False


@event.listens_for(Session, "after_commit")
def _run_on_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint released: its callbacks wait for the outer commit
    for _, callback in session.info.pop(_ON_COMMIT, ()):
        callback()


@event.listens_for(Session, "after_soft_rollback")
def _forget_rolled_back(session: Session, previous: SessionTransaction) -> None:
    waiting = session.info.get(_ON_COMMIT)
    if not waiting:
        return
    if previous.parent is None:
        session.info[_ON_COMMIT] = []
        return
    session.info[_ON_COMMIT] = [(t, c) for t, c in waiting if not within(t, previous)]


@event.listens_for(Session, "after_transaction_end")
def _forget_ended(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None and not transaction.nested:
        session.info.pop(_ON_COMMIT, None)
