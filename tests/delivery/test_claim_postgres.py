"""Concurrent claimers on PostgreSQL: SKIP LOCKED never hands one delivery to two workers."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import audit
from app.delivery import outbox
from app.main import create_app
from app.models import Delivery
from app.settings import Environment, Settings
from tests.conftest import TEST_SECRET
from tests.delivery.conftest import Clock


async def _seed(
    postgres_url: str, count: int, *, url: str = "http://127.0.0.1:9/inbox", services: int = 1
) -> None:
    """Queue ``count`` deliveries through the real intake path."""
    import httpx

    from app.auth import create_client
    from app.models import Role
    from tests.delivery.conftest import partner_document
    from tests.factories import adult_consenting

    settings = Settings(
        env=Environment.test,
        database_url=postgres_url,
        secret_key=TEST_SECRET,  # type: ignore[arg-type]
        embedded_worker=False,
        rate_limit_backend="off",
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with app.state.sessionmaker() as session:
            _c, admin = await create_client(
                session,
                secret_key=TEST_SECRET.encode(),
                name="a",
                role=Role.admin,
                organisation=None,
                actor=audit.system("test-setup"),
            )
            _c, clinic = await create_client(
                session,
                secret_key=TEST_SECRET.encode(),
                name="c",
                role=Role.clinic,
                organisation="Caravana de la Vida",
                actor=audit.system("test-setup"),
            )
            await session.commit()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ruta.test") as http:
            offered = ["medical", "psychological", "legal", "protection"][:services]
            doc = partner_document("p", url, services=offered)
            assert (
                await http.post(
                    "/v1/partners", json=doc, headers={"Authorization": f"Bearer {admin}"}
                )
            ).status_code == 201
            for _ in range(count):
                response = await http.post(
                    "/v1/screenings",
                    json=adult_consenting(),
                    headers={"Authorization": f"Bearer {clinic}"},
                )
                assert response.status_code == 201


@pytest.mark.postgres_only
async def test_concurrent_claimers_never_share_a_delivery(
    postgres_url: str, pg_maker: async_sessionmaker[AsyncSession]
) -> None:
    await _seed(postgres_url, 60)
    clock = Clock()
    config = outbox.ClaimConfig(lease_seconds=30, batch=7, per_partner_cap=1000)

    async def claimer(name: str) -> list[uuid.UUID]:
        got: list[uuid.UUID] = []
        for _ in range(20):
            async with pg_maker() as session:
                claimed = await outbox.claim(session, worker_id=name, now=clock.now, config=config)
                got += [d.id for d in claimed]
                await asyncio.sleep(0.01)  # hold the row locks a moment
                await session.commit()
            if not claimed:
                break
        return got

    results = await asyncio.gather(*(claimer(f"w{i}") for i in range(4)))
    flat = [d for r in results for d in r]
    assert len(flat) == len(set(flat)) == 60
    async with pg_maker() as session:
        owners = {d.id: d.lease_owner for d in (await session.execute(select(Delivery))).scalars()}
    for name, got in zip((f"w{i}" for i in range(4)), results, strict=True):
        assert all(owners[d] == name for d in got)
