"""Nothing is lost: 3 `ruta worker` processes on PostgreSQL, SIGKILLed at random points at
least 20 times while about 500 deliveries are in flight, against a real partner server."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.models import Delivery, Referral
from tests.conftest import TEST_SECRET
from tests.delivery.partner_server import PartnerServer
from tests.delivery.test_claim_postgres import _seed

RUTA = str(Path(sys.executable).with_name("ruta"))
SCREENINGS = 125  # x 4 services = 500 deliveries
KILLS = 20
DEADLINE_SECONDS = 150


def _spawn(postgres_url: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUTA_")}
    env.update(
        {
            "RUTA_ENV": "test",
            "RUTA_DATABASE_URL": postgres_url,
            "RUTA_SECRET_KEY": TEST_SECRET,
            "RUTA_DELIVERY_LEASE_SECONDS": "5",
            "RUTA_WORKER_POLL_SECONDS": "0.1",
            "RUTA_LOG_LEVEL": "ERROR",
        }
    )
    return subprocess.Popen(
        [RUTA, "worker", "--concurrency", "8"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.postgres_only
@pytest.mark.slow
async def test_sigkilled_workers_lose_nothing(
    postgres_url: str, pg_maker: async_sessionmaker[AsyncSession]
) -> None:
    server = PartnerServer(default=200).start()
    rng = random.Random(20261123)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        await _seed(postgres_url, SCREENINGS, url=server.url, services=4)
        async with pg_maker() as session:
            total = len(list((await session.execute(select(Delivery.id))).scalars()))
        assert total == SCREENINGS * 4

        workers = [_spawn(postgres_url) for _ in range(3)]
        kills = 0
        deadline = time.monotonic() + DEADLINE_SECONDS
        while kills < KILLS and time.monotonic() < deadline:
            await asyncio.sleep(rng.uniform(0.2, 0.7))
            index = rng.randrange(len(workers))
            workers[index].send_signal(signal.SIGKILL)
            workers[index].wait()
            kills += 1
            workers[index] = _spawn(postgres_url)
        assert kills >= KILLS

        while time.monotonic() < deadline:
            async with pg_maker() as session:
                pending = (
                    await session.execute(select(Delivery.id).where(Delivery.status == "pending"))
                ).all()
            if not pending:
                break
            await asyncio.sleep(0.5)

        async with pg_maker() as session:
            rows = list((await session.execute(select(Delivery))).scalars())
            referrals = list((await session.execute(select(Referral))).scalars())
        assert {d.status for d in rows} == {"delivered"}, "a delivery did not finish"
        assert {r.status for r in referrals} == {"delivered"}
        bodies: dict[str, set[bytes]] = defaultdict(set)
        for received in server.received:
            bodies[received.webhook_id].add(received.body)
            assert received.verified
        assert set(bodies) == {d.webhook_id for d in rows}  # every one arrived
        # A duplicate only ever repeats the same webhook-id with identical bytes.
        assert all(len(variants) == 1 for variants in bodies.values())
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
                try:
                    worker.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    worker.kill()
        server.stop()
