"""An idle worker starts on new work when it is committed, not at its next poll: in the
same process through the after-commit hook (both engines), and from another process
through PostgreSQL NOTIFY. The workers poll only every 10 s here; the partner must have the
referral within 4 s."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.delivery.outbox import ClaimConfig
from app.delivery.worker import DeliveryWorker
from app.main import create_app
from app.settings import Environment, Settings
from tests.conftest import TEST_SECRET, KeyFactory, key_factory
from tests.delivery.conftest import add_partner, submit
from tests.delivery.partner_server import PartnerServer

POLL = 10.0
WITHIN = 4.0
RUTA = str(Path(sys.executable).with_name("ruta"))


async def _arrival(server: PartnerServer, since: float) -> float:
    deadline = time.monotonic() + POLL + 5
    # The server's thread appends to a list: there is no event to wait on.
    while not server.received and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    assert server.received, "nothing arrived"
    return time.monotonic() - since


async def test_an_idle_worker_in_the_same_process_wakes_on_commit(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory, partner_server: PartnerServer
) -> None:
    await add_partner(http, api_key, "hospital-a", partner_server.url, services=["medical"])
    worker = DeliveryWorker(
        app.state.sessionmaker,
        app.state.settings,
        worker_id="idle",
        config=ClaimConfig(),
        poll_seconds=POLL,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.sleep(0.5)  # its first round found nothing: it is waiting now
        started = time.monotonic()
        await submit(http, api_key)
        assert await _arrival(partner_server, started) < WITHIN
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


@pytest.mark.postgres_only
async def test_a_worker_process_wakes_on_notify(
    postgres_url: str, partner_server: PartnerServer, tmp_path: Path
) -> None:
    settings = Settings(
        env=Environment.test,
        database_url=postgres_url,
        secret_key=TEST_SECRET,  # type: ignore[arg-type]
        embedded_worker=False,  # no worker in this process: only NOTIFY can wake one
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUTA_")}
    env.update(
        {
            "RUTA_ENV": "test",
            "RUTA_DATABASE_URL": postgres_url,
            "RUTA_SECRET_KEY": TEST_SECRET,
            "RUTA_WORKER_POLL_SECONDS": str(POLL),
            "RUTA_LOG_LEVEL": "INFO",  # its start line (delivery_worker_started) is INFO
        }
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://ruta.test") as http:
            api_key = key_factory(application, settings)
            await add_partner(http, api_key, "hospital-a", partner_server.url)
            path = tmp_path / "worker.log"
            worker = _spawn(env, path)
            try:
                deadline = time.monotonic() + 30
                while b"started" not in path.read_bytes():
                    assert worker.poll() is None, path.read_text()
                    assert time.monotonic() < deadline, "the worker did not start"
                    await asyncio.sleep(0.1)
                await asyncio.sleep(1.5)  # past its first, empty round: waiting on its poll
                started = time.monotonic()
                await submit(http, api_key)
                assert await _arrival(partner_server, started) < WITHIN
            finally:
                worker.terminate()
                try:
                    worker.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    worker.kill()


def _spawn(env: dict[str, str], path: Path) -> subprocess.Popen[bytes]:
    with path.open("wb") as log:
        return subprocess.Popen([RUTA, "worker"], env=env, stdout=log, stderr=subprocess.STDOUT)
