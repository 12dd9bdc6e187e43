from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from app import audit
from app.main import create_app
from app.ratelimit import MemoryRateLimiter, RedisRateLimiter
from app.settings import Settings
from tests.conftest import KeyFactory, bearer

REDIS_URL = os.environ.get("RUTA_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REQUIRE_REDIS = os.environ.get("RUTA_TEST_REQUIRE_REDIS") == "1"


async def _redis_or_skip() -> RedisRateLimiter:
    limiter = RedisRateLimiter(REDIS_URL, prefix=f"ruta:test:{uuid.uuid4().hex}:")
    try:
        await limiter.hit("probe", 10, 60)
    except Exception as exc:
        await limiter.close()
        if REQUIRE_REDIS:
            pytest.fail(f"RUTA_TEST_REQUIRE_REDIS=1 but Redis is unavailable: {exc!r}")
        pytest.skip(f"Redis unavailable at {REDIS_URL}: {type(exc).__name__}")
    return limiter


async def test_memory_limiter_counts_per_key() -> None:
    limiter = MemoryRateLimiter()
    verdicts = [await limiter.hit("a", 3, 60) for _ in range(4)]
    assert [v.allowed for v in verdicts] == [True, True, True, False]
    assert verdicts[-1].retry_after >= 1
    assert (await limiter.hit("b", 3, 60)).allowed


async def test_redis_limit_holds_across_replicas() -> None:
    first = await _redis_or_skip()
    # A second limiter is what a second replica holds: same store, same keys.
    second = RedisRateLimiter(REDIS_URL, prefix=first._prefix)
    try:
        results = []
        for i in range(6):
            limiter = first if i % 2 == 0 else second
            results.append((await limiter.hit("client:x", 4, 60)).allowed)
        assert results == [True, True, True, True, False, False]
    finally:
        await first.close()
        await second.close()


@pytest.fixture
async def limited_http(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    configured = settings.model_copy(
        update={"rate_limit_clinic": 3, "rate_limit_unauthenticated": 2}
    )
    application = create_app(configured)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://ruta.test") as c:
            yield c, application


async def test_over_limit_is_429_with_retry_after(
    limited_http: tuple[httpx.AsyncClient, FastAPI], settings: Settings
) -> None:
    http, application = limited_http
    from app.auth import create_client
    from app.models import Role

    async with application.state.sessionmaker() as session:
        _c, key = await create_client(
            session,
            secret_key=settings.secret_key.get_secret_value().encode(),
            name="t",
            role=Role.clinic,
            organisation="Caravana de la Vida",
            actor=audit.system("test-setup"),
        )
        await session.commit()
    url = f"/v1/screenings/{uuid.uuid4()}"
    statuses = [(await http.get(url, headers=bearer(key))).status_code for _ in range(4)]
    assert statuses == [404, 404, 404, 429]
    limited = await http.get(url, headers=bearer(key))
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["content-type"] == "application/problem+json"


async def test_failed_authentication_is_limited_per_source(
    limited_http: tuple[httpx.AsyncClient, FastAPI],
) -> None:
    http, _ = limited_http
    statuses = [
        (
            await http.get(
                f"/v1/screenings/{uuid.uuid4()}", headers=bearer("ruta_abcdefghijkm_guess")
            )
        ).status_code
        for _ in range(3)
    ]
    assert statuses == [401, 401, 429]


async def test_api_key_factory_still_works_under_default_limits(
    http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    key = await api_key("auditor")
    response = await http.get(f"/v1/screenings/{uuid.uuid4()}", headers=bearer(key))
    assert response.status_code == 403
