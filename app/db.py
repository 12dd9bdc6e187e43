"""Engine and session factory.

One request is one session: the dependency in :mod:`app.deps` commits or rolls back, and
services only ``flush()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

import orjson
from sqlalchemy import Insert, Table, event, insert
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


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


async def insert_rows(session: AsyncSession, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """INSERT plain rows (column name -> value) into ``table`` in one statement, in the
    caller's transaction; no ORM objects are made (the cheapest way to write many rows)."""
    if rows:
        await session.execute(_insert_into(table), list(rows))


@cache
def _insert_into(table: Table) -> Insert:
    """One INSERT statement object per table, so its cache key is computed once."""
    return insert(table)
