"""The in-process directory cache: a change made through this process applies to the next
screening; a change made elsewhere applies within the TTL; no cache when it is 0."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from app.main import create_app
from app.models import PartnerRow
from app.partners import cache
from app.partners.directory import Partner
from app.partners.service import directory_partners
from app.settings import Settings
from tests.conftest import KeyFactory, bearer
from tests.delivery.conftest import add_partner, submit

URL = "http://127.0.0.1:9/inbox"


@pytest.fixture
async def long_cache_app(settings: Settings) -> AsyncIterator[FastAPI]:
    """An app whose directory cache would hold for a minute unless invalidated."""
    application = create_app(settings.model_copy(update={"directory_cache_seconds": 60.0}))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def long_http(long_cache_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=long_cache_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ruta.test") as client:
        yield client


def medical_partner(receipt: dict[str, Any]) -> str | None:
    [item] = [r for r in receipt["decision"]["referrals"] if r["service"] == "medical"]
    return None if item["partner"] is None else str(item["partner"]["id"])


async def test_a_pause_through_the_api_applies_to_the_next_screening(
    long_http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    await add_partner(long_http, api_key, "first", URL, services=["medical"], priority=1)
    await add_partner(long_http, api_key, "second", URL, services=["medical"], priority=5)
    assert medical_partner(await submit(long_http, api_key)) == "first"  # cache now filled

    admin = bearer(await api_key("admin"))
    paused = await long_http.post("/v1/partners/first/pause", headers=admin)
    assert paused.status_code == 200, paused.text
    assert medical_partner(await submit(long_http, api_key)) == "second"

    resumed = await long_http.post("/v1/partners/first/resume", headers=admin)
    assert resumed.status_code == 200, resumed.text
    assert medical_partner(await submit(long_http, api_key)) == "first"


class CountingLoader:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, session: AsyncSession) -> Sequence[Partner]:
        self.calls += 1
        return await directory_partners(session)


async def test_changes_from_elsewhere_apply_within_the_ttl(long_cache_app: FastAPI) -> None:
    maker = long_cache_app.state.sessionmaker
    load = CountingLoader()
    async with maker() as session:
        first = await cache.cached_directory(session, load, ttl=60)
        again = await cache.cached_directory(session, load, ttl=60)
        assert load.calls == 1
        assert again is first
        # Another process changing the table (here: a Core UPDATE, which no session event
        # sees) is picked up once the TTL has passed; a TTL of 0 always reads.
        await cache.cached_directory(session, load, ttl=0)
        assert load.calls == 2
    async with maker() as session:
        await session.execute(update(PartnerRow).values(priority=7))
        await session.commit()
    async with maker() as session:
        stale = await cache.cached_directory(session, load, ttl=60)
        assert load.calls == 2
        assert stale is first
        fresh = await cache.cached_directory(session, load, ttl=1e-9)
        assert load.calls == 3
        assert all(p.priority == 7 for p in fresh)


async def test_a_transaction_that_changed_partners_reads_its_own_changes(
    long_cache_app: FastAPI, long_http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    await add_partner(long_http, api_key, "solo", URL, services=["medical"])
    maker = long_cache_app.state.sessionmaker
    load = CountingLoader()
    async with maker() as session:
        await cache.cached_directory(session, load, ttl=60)
        row = await session.get(PartnerRow, "solo")
        assert row is not None
        row.status = "paused"
        await session.flush()
        mine = await cache.cached_directory(session, load, ttl=60)
        assert [p.status.value for p in mine if p.id == "solo"] == ["paused"]
        await session.rollback()
    async with maker() as session:
        # The rollback left the cached directory valid: nothing changed.
        after = await cache.cached_directory(session, load, ttl=60)
        assert [p.status.value for p in after if p.id == "solo"] == ["active"]
