"""The outbox body's stored form (revision 0010): compressed, then encrypted; the partner
receives the same bytes as before, signed over those bytes, on every attempt and replay."""

from __future__ import annotations

import hashlib

import httpx
from fastapi import FastAPI
from sqlalchemy import text, update

from app import compact, crypto
from app.delivery import outbox
from app.delivery.worker import DeliveryWorker
from app.models import Delivery
from tests.conftest import KeyFactory
from tests.delivery.conftest import Clock, add_partner, deliveries, past_the_probe, submit
from tests.delivery.partner_server import PartnerServer


async def _plaintext(app: FastAPI, delivery: Delivery) -> bytes:
    async with app.state.sessionmaker() as session:
        dek = await outbox.subject_key(session, app.state.settings, delivery.subject_id)
    return crypto.decrypt_field(
        dek, delivery.body_ct, table="deliveries", column="body_ct", row_id=delivery.id
    )


async def test_bodies_are_compressed_before_encryption_and_sent_byte_for_byte(
    app: FastAPI,
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    partner_server: PartnerServer,
    worker: DeliveryWorker,
) -> None:
    await add_partner(http, api_key, "hospital-a", partner_server.url)
    await submit(http, api_key)
    assert await worker.run_once() >= 1
    sent = await deliveries(app)
    received = {r.webhook_id: r.body for r in partner_server.received}
    assert set(received) == {d.webhook_id for d in sent}
    for delivery in sent:
        body = received[delivery.webhook_id]
        plaintext = await _plaintext(app, delivery)
        # Encrypted at rest (no body text in the column), compressed inside the ciphertext.
        assert b"referral" not in delivery.body_ct
        assert plaintext[0] == compact.CURRENT
        assert compact.unpack(plaintext) == body
        assert len(delivery.body_ct) < len(body)
        assert delivery.body_sha256 == hashlib.sha256(body).hexdigest()
    async with app.state.sessionmaker() as session:
        stored = (await session.execute(text("SELECT body_sha256 FROM deliveries"))).scalars()
        assert {len(bytes(digest)) for digest in stored} == {32}


async def test_a_body_stored_before_0010_is_replayed_byte_for_byte(
    app: FastAPI,
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    partner_server: PartnerServer,
    worker: DeliveryWorker,
    clock: Clock,
) -> None:
    """A row written before the upgrade holds the body encrypted uncompressed: it is sent as
    it is, and a dead letter replayed sends the same bytes again."""
    await add_partner(http, api_key, "hospital-a", partner_server.url, services=["medical"])
    await submit(http, api_key)
    [delivery] = await deliveries(app)
    body = compact.unpack(await _plaintext(app, delivery))
    async with app.state.sessionmaker() as session:
        dek = await outbox.subject_key(session, app.state.settings, delivery.subject_id)
        legacy = crypto.encrypt_field(
            dek, body, table="deliveries", column="body_ct", row_id=delivery.id
        )
        await session.execute(
            update(Delivery).where(Delivery.id == delivery.id).values(body_ct=legacy)
        )
        await session.commit()
        reread = await session.get(Delivery, delivery.id)
        assert reread is not None
        assert await outbox.body_of(session, app.state.settings, reread) == body
    await worker.run_once()
    async with app.state.sessionmaker() as session:
        await session.execute(
            update(Delivery).where(Delivery.id == delivery.id).values(status="dead")
        )
        await session.commit()
    admin = await api_key("admin")
    replayed = await http.post(
        f"/v1/deliveries/{delivery.id}/replay", headers={"Authorization": f"Bearer {admin}"}
    )
    assert replayed.status_code == 200, replayed.text
    await past_the_probe(app, clock, "hospital-a")
    await worker.run_once()
    assert [r.body for r in partner_server.received] == [body, body]
    assert all(r.verified for r in partner_server.received)
    assert len({r.webhook_id for r in partner_server.received}) == 1
