"""The per-partner in-flight cap holds across workers, on SQLite and PostgreSQL.

A partner that was down (its circuit open, a backlog of retries) recovers; four delivery
workers, each with its own engine and connection pool like separate processes, drain the
backlog at once. The real partner server on loopback holds every request a moment and
records how many it was serving at the same time: never more than the cap. Every delivery
arrives exactly once after the recovery, under its own webhook-id.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from app import audit
from app.db import create_engine, create_sessionmaker
from app.delivery import outbox
from app.delivery.outbox import ClaimConfig
from app.delivery.worker import DeliveryWorker
from app.models import Delivery, DeliveryAttempt, PartnerCircuit
from app.settings import Settings
from tests.conftest import KeyFactory
from tests.delivery.conftest import Clock, add_partner, deliveries, submit
from tests.delivery.partner_server import PartnerServer

CAP = 3
WORKERS = 4
SCREENINGS = 30  # x 4 services = 120 deliveries
DEADLINE_SECONDS = 90
MAX_ROUNDS = 2_000


async def _pending(app: FastAPI) -> int:
    async with app.state.sessionmaker() as session:
        count = await session.scalar(
            select(func.count()).select_from(Delivery).where(Delivery.status == "pending")
        )
    return int(count or 0)


async def test_claimers_that_overlap_count_each_others_leases(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory, settings: Settings, clock: Clock
) -> None:
    """Four claims in flight at the same moment, each holding its transaction open a while
    before committing: together they lease no more than the cap."""
    await add_partner(http, api_key, "busy", "http://127.0.0.1:9/inbox")
    for _ in range(5):
        await submit(http, api_key)
    engines = [create_engine(settings.database_url) for _ in range(WORKERS)]
    config = ClaimConfig(lease_seconds=30, batch=20, per_partner_cap=CAP)
    start = asyncio.Event()

    async def claimer(index: int) -> int:
        maker = create_sessionmaker(engines[index])
        await start.wait()
        async with maker() as session:
            claimed = await outbox.claim(
                session, worker_id=f"c{index}", now=clock.now, config=config
            )
            await asyncio.sleep(0.2)  # the widest window a slow claimer could have
            await session.commit()
        return len(claimed)

    try:
        tasks = [asyncio.create_task(claimer(i)) for i in range(WORKERS)]
        await asyncio.sleep(0.05)
        start.set()
        counts = await asyncio.gather(*tasks)
    finally:
        for engine in engines:
            await engine.dispose()
    assert sum(counts) == CAP, counts
    leased = [d for d in await deliveries(app) if d.lease_owner is not None]
    assert len(leased) == CAP


async def test_the_cap_holds_across_workers_while_a_backlog_drains(
    app: FastAPI,
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    settings: Settings,
    clock: Clock,
) -> None:
    server = PartnerServer(default=503, delay=0.05).start()
    engines = [create_engine(settings.database_url) for _ in range(WORKERS)]
    clients = [httpx.AsyncClient(timeout=5.0, trust_env=False) for _ in range(WORKERS)]
    try:
        await add_partner(http, api_key, "busy", server.url)
        for _ in range(SCREENINGS):
            await submit(http, api_key)
        total = len(await deliveries(app))
        assert total == SCREENINGS * 4

        makers = [create_sessionmaker(engine) for engine in engines]
        for maker in makers:
            audit.configure_sessionmaker(maker, settings)
        config = ClaimConfig(lease_seconds=30, batch=20, per_partner_cap=CAP)
        workers = [
            DeliveryWorker(
                maker,
                settings,
                worker_id=f"drain-{i}",
                config=config,
                clock=clock,
                client=client,
                concurrency=10,
            )
            for i, (maker, client) in enumerate(zip(makers, clients, strict=True))
        ]

        # The partner is down: failures open its circuit; the backlog waits.
        for _ in range(10):
            await workers[0].run_once()
            async with app.state.sessionmaker() as session:
                circuit = await session.get(PartnerCircuit, "busy")
            if circuit is not None and circuit.state == "open":
                break
        assert circuit is not None
        assert circuit.state == "open"
        assert server.max_in_flight <= CAP
        failed = len(server.received)
        assert failed >= 5

        # It recovers; the probe is due, and so are the retries.
        server.default = 200
        server.max_in_flight = 0
        clock.advance(120)
        deadline = time.monotonic() + DEADLINE_SECONDS

        async def drain(worker: DeliveryWorker) -> None:
            for _ in range(MAX_ROUNDS):
                if time.monotonic() > deadline:
                    return
                if await worker.run_once() == 0:
                    if await _pending(app) == 0:
                        return
                    await asyncio.sleep(0.01)

        await asyncio.gather(*(drain(worker) for worker in workers))

        assert await _pending(app) == 0, "the backlog did not drain in time"
        assert server.max_in_flight <= CAP, f"{server.max_in_flight} requests at once"
        assert server.max_in_flight == CAP  # the workers did overlap: the cap was reached
        rows = await deliveries(app)
        assert {d.status for d in rows} == {"delivered"}
        after = Counter(r.webhook_id for r in server.received[failed:])
        assert set(after) == {d.webhook_id for d in rows}
        assert set(after.values()) == {1}, "a webhook-id was delivered twice"
        assert all(r.verified for r in server.received)
        async with app.state.sessionmaker() as session:
            delivered = await session.scalar(
                select(func.count())
                .select_from(DeliveryAttempt)
                .where(DeliveryAttempt.outcome == "delivered")
            )
            used = set((await session.execute(select(DeliveryAttempt.worker).distinct())).scalars())
        assert delivered == total
        assert len(used) > 1, "only one worker took part"
    finally:
        for client in clients:
            await client.aclose()
        for engine in engines:
            await engine.dispose()
        server.stop()
