"""The partner directory as matching reads it, cached in-process for a moment.

Every screening matches against the whole directory; reading and converting every partner
row per screening was a measurable share of intake (docs/performance.md). The converted
directory is reused for ``RUTA_DIRECTORY_CACHE_SECONDS`` (default 1 s; 0 turns it off),
with the guarantees of :mod:`app.cache`: a change committed through this process applies to
the next screening, one from another process within the TTL.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from app.cache import TableWatch, TtlCache
from app.models import PartnerRow
from app.partners.directory import Partner

PARTNERS = TableWatch("partners", PartnerRow)
_directory: TtlCache[None, tuple[Partner, ...]] = TtlCache(PARTNERS)


async def cached_directory(
    session: AsyncSession,
    load: Callable[[AsyncSession], Awaitable[Sequence[Partner]]],
    *,
    ttl: float,
) -> Sequence[Partner]:
    """The directory from the cache when fresh, else from ``load`` (and cached)."""

    async def read() -> tuple[Partner, ...]:
        return tuple(await load(session))

    return await _directory.get(session, None, read, ttl=ttl)


def invalidate() -> None:
    """Forget the cached directory (for changes made outside the ORM)."""
    PARTNERS.bump()
