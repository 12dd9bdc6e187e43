"""Short-lived in-process caches of rows every request reads (the partner directory, API
keys), kept honest by invalidation.

A :class:`TableWatch` counts, per process, the commits that changed rows of some mapped
classes (seen by the ORM at flush). A :class:`TtlCache` entry is used only while

* no commit in this process has changed those rows since the entry was read (so a change
  made through this process applies to the very next request),
* it is younger than the TTL (so a change made by another process, a replica, the worker
  or the CLI, applies within the TTL), and
* the reading transaction has not changed those rows itself.

When an entry expires under load, many requests miss at once. Only the first reads the
database; the others wait for its read (one read per key per process, not one per request)
and read for themselves only if it fails.

The database stays the only truth: nothing is ever written through a cache. Changes made
with Core statements are not seen by the watch; they apply within the TTL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from itertools import chain
from typing import Any, Generic, TypeVar, cast
from weakref import WeakKeyDictionary

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TableWatch:
    """The generation of some tables' content, as far as this process has changed it."""

    def __init__(self, name: str, *models: type[Any]) -> None:
        self.generation = 0
        self._flag = f"ruta.changed.{name}"
        self._models = models
        event.listen(Session, "before_flush", self._before_flush)
        event.listen(Session, "after_commit", self._after_commit)
        event.listen(Session, "after_transaction_end", self._after_transaction_end)

    def changed_in(self, session: AsyncSession) -> bool:
        """Whether this session's transaction has changed the watched rows."""
        return bool(session.sync_session.info.get(self._flag))

    def bump(self) -> None:
        """Invalidate every entry read before now."""
        self.generation += 1

    def _before_flush(self, session: Session, _context: Any, _instances: Any) -> None:
        if any(
            isinstance(obj, self._models)
            for obj in chain(session.new, session.dirty, session.deleted)
        ):
            session.info[self._flag] = True

    def _after_commit(self, session: Session) -> None:
        if session.info.pop(self._flag, False):
            self.bump()

    def _after_transaction_end(self, session: Session, transaction: SessionTransaction) -> None:
        if transaction.parent is None and not transaction.nested:
            session.info.pop(self._flag, None)


class TtlCache(Generic[K, V]):
    """Values read from one database (per engine), by key, for at most a TTL."""

    def __init__(self, watch: TableWatch, *, max_entries: int = 10_000) -> None:
        self.watch = watch
        self._max = max_entries
        self._entries: WeakKeyDictionary[Engine, dict[K, tuple[int, float, V]]] = (
            WeakKeyDictionary()
        )
        #: Reads in progress, by engine and key: the generation they started at and the
        #: future their result goes to (``_FAILED`` if the read failed).
        self._reading: dict[tuple[Engine, K], tuple[int, asyncio.Future[Any]]] = {}

    async def get(
        self,
        session: AsyncSession,
        key: K,
        load: Callable[[], Awaitable[V]],
        *,
        ttl: float,
        store: Callable[[V], bool] = lambda _value: True,
    ) -> V:
        """The cached value when fresh, else ``await load()`` (cached when ``store`` says)."""
        if ttl <= 0 or self.watch.changed_in(session):
            return await load()
        engine = session.sync_session.get_bind()
        assert isinstance(engine, Engine)
        entries = self._entries.setdefault(engine, {})
        # The generation is read before loading: a commit racing with the load leaves an
        # entry that is already stale, never a fresh-looking one with old content.
        generation, now = self.watch.generation, time.monotonic()
        entry = entries.get(key)
        if entry is not None and entry[0] == generation and now - entry[1] < ttl:
            return entry[2]
        loop = asyncio.get_running_loop()
        reading = self._reading.get((engine, key))
        if reading is not None and reading[0] == generation and reading[1].get_loop() is loop:
            # Another request is reading this key right now: share its read.
            shared = await asyncio.shield(reading[1])
            return await load() if shared is _FAILED else cast(V, shared)
        future: asyncio.Future[Any] = loop.create_future()
        self._reading[engine, key] = (generation, future)
        value: Any = _FAILED
        try:
            value = await load()
        finally:
            if self._reading.get((engine, key), (0, None))[1] is future:
                del self._reading[engine, key]
            future.set_result(value)
        if store(value) and not self.watch.changed_in(session):
            if len(entries) >= self._max:
                entries.clear()
            entries[key] = (generation, now, value)
        return cast(V, value)


#: What a shared read's waiters get when the read failed: each then reads for itself.
_FAILED: Any = object()
