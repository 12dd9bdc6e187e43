"""Per-client rate limits.

Fixed windows counted in a shared store: Redis for several replicas (one ``INCR`` and one
``EXPIRE NX`` in a single pipeline round trip per request), or process memory for the
embedded single-process default. An over-limit request gets 429 with Retry-After.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Protocol

from app.errors import TooManyRequests


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    retry_after: int


class RateLimiter(Protocol):
    async def hit(self, key: str, limit: int, window: int) -> Verdict: ...

    async def close(self) -> None: ...


def _verdict(count: int, limit: int, window: int, now: float) -> Verdict:
    reset_in = max(1, math.ceil(window - (now % window)))
    return Verdict(
        allowed=count <= limit,
        limit=limit,
        remaining=max(0, limit - count),
        retry_after=reset_in,
    )


class MemoryRateLimiter:
    """Within one process only: right for the embedded SQLite default, wrong for replicas."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], int] = {}
        self._lock = asyncio.Lock()
        self._clock = time.time

    async def hit(self, key: str, limit: int, window: int) -> Verdict:
        now = self._clock()
        bucket = int(now // window)
        async with self._lock:
            if len(self._counts) > 100_000:
                self._counts = {k: v for k, v in self._counts.items() if k[1] >= bucket}
            count = self._counts.get((key, bucket), 0) + 1
            self._counts[(key, bucket)] = count
        return _verdict(count, limit, window, now)

    async def close(self) -> None:
        return None


class RedisRateLimiter:
    """Holds across replicas: every replica counts in the same Redis keys."""

    def __init__(self, url: str, prefix: str = "ruta:rl:") -> None:
        from redis.asyncio import Redis

        self._redis = Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._prefix = prefix

    async def hit(self, key: str, limit: int, window: int) -> Verdict:
        now = time.time()
        bucket = int(now // window)
        redis_key = f"{self._prefix}{key}:{window}:{bucket}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(redis_key)
            pipe.expire(redis_key, window + 1, nx=True)
            count, _ = await pipe.execute()
        return _verdict(int(count), limit, window, now)

    async def close(self) -> None:
        await self._redis.aclose()


class NoRateLimiter:
    async def hit(self, key: str, limit: int, window: int) -> Verdict:
        return Verdict(allowed=True, limit=limit, remaining=limit, retry_after=0)

    async def close(self) -> None:
        return None


def create_rate_limiter(backend: str, redis_url: str) -> RateLimiter:
    if backend == "redis":
        return RedisRateLimiter(redis_url)
    if backend == "off":
        return NoRateLimiter()
    return MemoryRateLimiter()


def enforce(verdict: Verdict) -> None:
    if not verdict.allowed:
        raise TooManyRequests(
            "Too many requests. Retry after {seconds} seconds.",
            params={"seconds": verdict.retry_after},
            headers={
                "Retry-After": str(verdict.retry_after),
                "RateLimit-Limit": str(verdict.limit),
                "RateLimit-Remaining": "0",
            },
        )
