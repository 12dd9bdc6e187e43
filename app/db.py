"""Engine and session factory.

One request is one session: the dependency in :mod:`app.deps` commits or rolls back, and
services only ``flush()``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
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


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
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
