"""A partner's report racing the worker's recording of the same delivery (the partner can
answer before the worker has written down its 2xx). The audit chain's lock must be the
last lock a transaction takes: a transaction that took it and then waited for a referral's
row, while the row's holder waited for the chain, deadlocked on PostgreSQL (seen as a 500
on POST /v1/referrals/{id}/status)."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from fastapi import FastAPI

from app import audit
from app.audit import Action
from app.delivery.worker import DeliveryWorker
from app.models import Referral
from tests.conftest import KeyFactory, bearer
from tests.delivery.conftest import Clock, add_partner, referral, submit
from tests.delivery.partner_server import PartnerServer


@pytest.mark.postgres_only
async def test_the_chain_lock_is_taken_after_every_row_lock(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    """Deterministic: the report holds the referral's row; the worker's commit must wait
    for that row *before* it takes the chain lock, so the report can append and commit."""
    if app.state.engine.dialect.name != "postgresql":
        pytest.skip("SQLite serialises writers: there is no row lock to race")
    await add_partner(http, api_key, "quick", "http://127.0.0.1:9/x", role="health_facility")
    receipt = await submit(http, api_key, consent__scopes=["medical"], safety={})
    referral_id = uuid.UUID(receipt["decision"]["referrals"][0]["id"])
    actor = audit.system("test")
    maker = app.state.sessionmaker
    async with maker() as report:
        held = await report.get(Referral, referral_id, with_for_update=True)
        assert held is not None

        async def worker_commit() -> None:
            async with maker() as worker:
                row = await worker.get(Referral, referral_id)
                assert row is not None
                row.status = "delivered"
                await audit.record(
                    worker, action=Action.referral_attempted, actor=actor, referral_id=row.id
                )
                await worker.commit()

        racing = asyncio.create_task(worker_commit())
        await asyncio.sleep(1.5)  # the worker is now blocked; longer than deadlock_timeout
        held.status = "accepted"
        await audit.record(
            report, action=Action.referral_status_changed, actor=actor, referral_id=held.id
        )
        await report.commit()
    await asyncio.wait_for(racing, timeout=10)
    assert (await referral(app, str(referral_id))).status == "delivered"


async def test_a_report_racing_the_delivery_record_never_fails(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory, partner_server: PartnerServer
) -> None:
    await add_partner(
        http, api_key, "quick", partner_server.url, role="health_facility", services=["medical"]
    )
    partner = bearer(await api_key("partner", "quick"))
    worker = DeliveryWorker(app.state.sessionmaker, app.state.settings, clock=Clock())
    for _ in range(8):
        receipt = await submit(
            http, api_key, consent__scopes=["medical"], safety={}, needs_expressed=["medical_care"]
        )
        [item] = [r for r in receipt["decision"]["referrals"] if r["service"] == "medical"]
        url = f"/v1/referrals/{item['id']}/status"
        _, reply = await asyncio.gather(
            worker.run_once(), http.post(url, json={"status": "accepted"}, headers=partner)
        )
        assert reply.status_code == 200, reply.text
        assert (await referral(app, item["id"])).status == "accepted"
