from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import audit
from app.db import create_engine, create_sessionmaker
from app.delivery import policy
from app.delivery.outbox import ClaimConfig
from app.delivery.worker import DeliveryWorker
from app.models import Delivery, PartnerCircuit, Referral
from app.models.base import utcnow
from app.settings import Environment, Settings
from tests.conftest import TEST_SECRET, KeyFactory, _admin_execute, _db_url, bearer
from tests.delivery.partner_server import SECRET
from tests.factories import adult_consenting


class Clock:
    """A clock the test moves: the schedule runs in simulated time."""

    def __init__(self) -> None:
        # Ahead of the wall clock, so work that intake queues during the test is due.
        self.now = utcnow() + timedelta(minutes=2)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def worker(app: FastAPI, clock: Clock) -> AsyncIterator[DeliveryWorker]:
    client = httpx.AsyncClient(timeout=httpx.Timeout(1.0), follow_redirects=False, trust_env=False)
    try:
        yield DeliveryWorker(
            app.state.sessionmaker,
            app.state.settings,
            worker_id="test-worker-a",
            config=ClaimConfig(lease_seconds=30, batch=50, per_partner_cap=50),
            clock=clock,
            client=client,
        )
    finally:
        await client.aclose()


def partner_document(partner_id: str, url: str, **overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": partner_id,
        "organisation": {"id": partner_id, "name": f"Org {partner_id}"},
        "name": f"Partner {partner_id}",
        "role": "shelter",
        "services": ["medical", "psychological", "legal", "protection"],
        "service_area": {"national": True},
        "languages": ["es", "qu"],
        "capacity": {"available": 100, "maximum": 100},
        "endpoint": {"url": url, "secrets": [SECRET]},
    }
    document.update(overrides)
    return document


async def add_partner(
    http: httpx.AsyncClient, api_key: KeyFactory, partner_id: str, url: str, **overrides: Any
) -> None:
    admin = await api_key("admin")
    response = await http.post(
        "/v1/partners", json=partner_document(partner_id, url, **overrides), headers=bearer(admin)
    )
    assert response.status_code == 201, response.text


async def submit(http: httpx.AsyncClient, api_key: KeyFactory, **overrides: Any) -> dict[str, Any]:
    clinic = await api_key("clinic", "Caravana de la Vida")
    body = adult_consenting(**overrides)
    response = await http.post("/v1/screenings", json=body, headers=bearer(clinic))
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def deliveries(app: FastAPI) -> list[Delivery]:
    async with app.state.sessionmaker() as session:
        return list(
            (await session.execute(select(Delivery).order_by(Delivery.created_at))).scalars()
        )


async def referral(app: FastAPI, referral_id: str) -> Referral:
    async with app.state.sessionmaker() as session:
        row: Referral | None = await session.get(Referral, uuid.UUID(referral_id))
        assert row is not None
        return row


async def past_the_probe(app: FastAPI, clock: Clock, partner_id: str) -> None:
    """Move the clock past the partner's next circuit probe, if its circuit is open."""
    async with app.state.sessionmaker() as session:
        circuit = await session.get(PartnerCircuit, partner_id)
        if circuit is not None and circuit.next_probe_at is not None:
            clock.now = max(clock.now, circuit.next_probe_at + timedelta(seconds=1))


async def until_dead(app: FastAPI, worker: DeliveryWorker, clock: Clock, partner_id: str) -> None:
    """Run the worker, in simulated time, until the one delivery is no longer pending (a
    partner that keeps failing: retries run out and it becomes a dead letter)."""
    for _ in range(policy.max_attempts() + 2):
        [delivery] = await deliveries(app)
        if delivery.status != "pending":
            return
        clock.advance(max(0.0, (delivery.next_attempt_at - clock.now).total_seconds()) + 1)
        # The circuit opens after a few failures: each round is also its probe.
        await past_the_probe(app, clock, partner_id)
        await worker.run_once()


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    admin_url, template = request.getfixturevalue("postgres_template")
    name = f"ruta_t_{uuid.uuid4().hex[:12]}"
    _admin_execute(admin_url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield _db_url(admin_url, name)
    finally:
        _admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def pg_maker(postgres_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    settings = Settings(
        env=Environment.test,
        database_url=postgres_url,
        secret_key=TEST_SECRET,  # type: ignore[arg-type]
        embedded_worker=False,
    )
    engine = create_engine(postgres_url)
    maker = create_sessionmaker(engine)
    audit.configure_sessionmaker(maker, settings)
    try:
        yield maker
    finally:
        await engine.dispose()
