"""Engine and session factory.

One request is one session: the dependency in :mod:`app.deps` commits or rolls back, and
services only ``flush()``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
from sqlalchemy.orm import Session, SessionTransaction


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
