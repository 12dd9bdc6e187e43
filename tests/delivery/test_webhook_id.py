"""A delivery's ``webhook-id`` (revision 0016): derived from the delivery's id for new rows,
the stored one for rows written before, and the same on every attempt and every replay,
as partners deduplicate on it (docs/partners.md, "Headers")."""

from __future__ import annotations

import uuid

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from app.delivery.worker import DeliveryWorker
from tests.conftest import KeyFactory, bearer
from tests.delivery.conftest import (
    Clock,
    add_partner,
    deliveries,
    past_the_probe,
    submit,
    until_dead,
)
from tests.delivery.partner_server import PartnerServer


async def _stored_ids(app: FastAPI) -> dict[str, str | None]:
    async with app.state.sessionmaker() as session:
        rows = await session.execute(text("SELECT id, webhook_id FROM deliveries"))
        return {str(uuid.UUID(str(i))): w for i, w in rows.all()}


async def test_a_new_delivery_is_sent_with_msg_and_its_own_id(
    app: FastAPI,
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    partner_server: PartnerServer,
    worker: DeliveryWorker,
) -> None:
    await add_partner(http, api_key, "hospital-a", partner_server.url)
    receipt = await submit(http, api_key)
    sent = await deliveries(app)
    assert sent
    assert set((await _stored_ids(app)).values()) == {None}  # nothing stored per row
    await worker.run_once()
    expected = {f"msg_{d.id.hex}" for d in sent}
    assert {r.headers["webhook-id"] for r in partner_server.received} == expected
    assert all(r.verified for r in partner_server.received)  # signed with that id
    admin, auditor = await api_key("admin"), await api_key("auditor")
    for delivery in sent:
        shown = await http.get(f"/v1/deliveries/{delivery.id}", headers=bearer(admin))
        assert shown.json()["webhook_id"] == f"msg_{delivery.id.hex}"
    item = receipt["decision"]["referrals"][0]
    explained = await http.get(f"/v1/referrals/{item['id']}", headers=bearer(auditor))
    for shown in explained.json()["deliveries"]:
        assert shown["webhook_id"] == f"msg_{uuid.UUID(shown['id']).hex}"


async def test_the_id_holds_across_retries_and_a_replay(
    app: FastAPI,
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    partner_server: PartnerServer,
    worker: DeliveryWorker,
    clock: Clock,
) -> None:
    await add_partner(http, api_key, "flaky", partner_server.url, services=["medical"])
    await submit(http, api_key)
    partner_server.default = 500
    await until_dead(app, worker, clock, "flaky")
    [delivery] = await deliveries(app)
    failed = len(partner_server.received)
    assert failed > 1  # retried
    replayed = await http.post(
        f"/v1/deliveries/{delivery.id}/replay", headers=bearer(await api_key("admin"))
    )
    assert replayed.status_code == 200, replayed.text
    partner_server.default = 200
    await past_the_probe(app, clock, "flaky")
    await worker.run_once()
    [delivery] = await deliveries(app)
    assert delivery.status == "delivered"
    assert len(partner_server.received) == failed + 1
    ids = [r.headers["webhook-id"] for r in partner_server.received]
    assert ids == [f"msg_{delivery.id.hex}"] * (failed + 1)


async def test_a_row_written_before_0016_keeps_its_stored_id(
    app: FastAPI,
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    partner_server: PartnerServer,
    worker: DeliveryWorker,
) -> None:
    await add_partner(http, api_key, "hospital-a", partner_server.url, services=["medical"])
    await submit(http, api_key)
    old = f"msg_{uuid.uuid4().hex}"  # a random id, as rows were given before 0016
    async with app.state.sessionmaker() as session:
        await session.execute(text("UPDATE deliveries SET webhook_id = :w"), {"w": old})
        await session.commit()
    [delivery] = await deliveries(app)
    assert delivery.webhook_id == old != f"msg_{delivery.id.hex}"
    await worker.run_once()
    assert [r.headers["webhook-id"] for r in partner_server.received] == [old]
    shown = await http.get(f"/v1/deliveries/{delivery.id}", headers=bearer(await api_key("admin")))
    assert shown.json()["webhook_id"] == old


async def test_stored_ids_stay_unique(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory, partner_server: PartnerServer
) -> None:
    await add_partner(http, api_key, "hospital-a", partner_server.url)
    await submit(http, api_key)
    assert len(await deliveries(app)) > 1
    async with app.state.sessionmaker() as session:
        with pytest.raises(IntegrityError, match=r"(?i)unique"):
            await session.execute(text("UPDATE deliveries SET webhook_id = 'msg_same'"))
