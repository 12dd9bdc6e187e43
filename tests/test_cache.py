"""The in-process TTL cache under concurrency: requests that miss together share one read.

Without this, an expiring entry under load sent every waiting request to the database at
once (measured: about one directory read and one key lookup per screening at 32 clients).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.cache import TableWatch, TtlCache


class _Thing:
    """Stands for a mapped class; nothing here flushes one."""


def _cache() -> TtlCache[str, int]:
    return TtlCache(TableWatch("test-things", _Thing))


class _Reader:
    """A read that blocks until released, and counts how often it ran."""

    def __init__(self, *, fail_first: bool = False) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self._fail_first = fail_first

    async def __call__(self) -> int:
        self.calls += 1
        call = self.calls
        if call == 1:
            await self.release.wait()
            if self._fail_first:
                raise ConnectionError("the database went away")
        return 40 + call


async def _concurrently(
    cache: TtlCache[str, int],
    sessionmaker: async_sessionmaker[AsyncSession],
    reader: _Reader,
    n: int,
) -> list[Any]:
    async def one() -> int:
        async with sessionmaker() as session:
            return await cache.get(session, "key", reader, ttl=60)

    tasks = [asyncio.ensure_future(one()) for _ in range(n)]
    for _ in range(5):
        await asyncio.sleep(0)  # every task has missed and is waiting on the first read
    reader.release.set()
    return list(await asyncio.gather(*tasks, return_exceptions=True))


async def test_concurrent_misses_share_one_read(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    cache, reader = _cache(), _Reader()
    values = await _concurrently(cache, sessionmaker, reader, 20)
    assert values == [41] * 20
    assert reader.calls == 1
    async with sessionmaker() as session:  # and the value is now cached
        assert await cache.get(session, "key", reader, ttl=60) == 41
    assert reader.calls == 1


async def test_when_the_shared_read_fails_each_waiter_reads_for_itself(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    cache, reader = _cache(), _Reader(fail_first=True)
    values = await _concurrently(cache, sessionmaker, reader, 5)
    assert isinstance(values[0], ConnectionError)  # only the reader that failed sees it
    assert sorted(values[1:]) == [42, 43, 44, 45]
    assert reader.calls == 5


async def test_a_read_started_before_an_invalidation_is_not_shared_after_it(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    cache, reader = _cache(), _Reader()

    async def one() -> int:
        async with sessionmaker() as session:
            return await cache.get(session, "key", reader, ttl=60)

    first = asyncio.ensure_future(one())
    await asyncio.sleep(0)
    cache.watch.bump()  # a commit changed the rows while the first read was in flight
    second = asyncio.ensure_future(one())
    await asyncio.sleep(0)
    reader.release.set()
    assert await first == 41
    assert await second == 42  # read again: the first read may predate the change
    assert reader.calls == 2


@pytest.mark.parametrize("ttl", [0, -1])
async def test_no_sharing_and_no_cache_when_turned_off(
    sessionmaker: async_sessionmaker[AsyncSession], ttl: float
) -> None:
    cache, reader = _cache(), _Reader()
    reader.release.set()
    async with sessionmaker() as session:
        assert await cache.get(session, "key", reader, ttl=ttl) == 41
        assert await cache.get(session, "key", reader, ttl=ttl) == 42
