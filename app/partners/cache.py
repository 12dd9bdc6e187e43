"""The partner directory as matching reads it, cached in-process for a moment.

Every screening matches against the whole directory; reading and converting every partner
row per screening was a measurable share of intake (docs/performance.md). The cache holds
the converted directory for ``RUTA_DIRECTORY_CACHE_SECONDS`` (default 1 s; 0 turns it off):

* a commit in this process that changed a partner row invalidates it at once, so an admin
  change (pause, capacity, endpoint) made through this process applies to the next
  screening;
* a change committed by another process (a replica, the worker, the CLI) applies within the
  TTL;
* a transaction that has changed partners itself never reads the cache.

The database stays the only truth: nothing is written through the cache.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from itertools import chain
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

from app.models import PartnerRow
from app.partners.directory import Partner

_CHANGED = "ruta.partners_changed"
#: Bumped by every commit in this process that changed a partner row.
_generation = 0
_entries: WeakKeyDictionary[Engine, tuple[int, float, tuple[Partner, ...]]] = WeakKeyDictionary()


async def cached_directory(
    session: AsyncSession,
    load: Callable[[AsyncSession], Awaitable[Sequence[Partner]]],
    *,
    ttl: float,
) -> Sequence[Partner]:
    """The directory from the cache when fresh, else from ``load`` (and cached)."""
    if ttl <= 0 or session.sync_session.info.get(_CHANGED):
        return await load(session)
    engine = session.sync_session.get_bind()
    assert isinstance(engine, Engine)
    generation, now = _generation, time.monotonic()
    entry = _entries.get(engine)
    if entry is not None and entry[0] == generation and now - entry[1] < ttl:
        return entry[2]
    # The generation is read before the query: a commit racing with it invalidates the entry.
    partners = tuple(await load(session))
    if not session.sync_session.info.get(_CHANGED):
        _entries[engine] = (generation, now, partners)
    return partners


def invalidate() -> None:
    """Forget every cached directory (tests, and anything that changes partners outside a
    session)."""
    global _generation
    _generation += 1


@event.listens_for(Session, "before_flush")
def _note_partner_changes(session: Session, _context: Any, _instances: Any) -> None:
    if any(
        isinstance(obj, PartnerRow) for obj in chain(session.new, session.dirty, session.deleted)
    ):
        session.info[_CHANGED] = True


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.info.pop(_CHANGED, False):
        invalidate()


@event.listens_for(Session, "after_transaction_end")
def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None and not transaction.nested:
        session.info.pop(_CHANGED, None)
