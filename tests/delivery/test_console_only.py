"""A partner with no endpoint is served only through the console: nothing is posted, its
referrals wait in its inbox, and deadlines, fallback and withdrawal notices apply as for
any partner. On SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy import select

from app.delivery.worker import DeliveryWorker
from app.models import DeliveryAttempt
from app.models.audit import AuditEvent
from app.partners.directory import Partner
from tests.conftest import KeyFactory, bearer
from tests.delivery.conftest import (
    Clock,
    add_partner,
    deliveries,
    partner_document,
    referral,
    submit,
)
from tests.delivery.partner_server import PartnerServer


def medical(receipt: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = next(
        r for r in receipt["decision"]["referrals"] if r["service"] == "medical"
    )
    return found


async def add_console_partner(
    http: httpx.AsyncClient, api_key: KeyFactory, partner_id: str, **overrides: object
) -> None:
    document = partner_document(partner_id, "unused", **overrides)
    del document["endpoint"]
    admin = await api_key("admin")
    response = await http.post("/v1/partners", json=document, headers=bearer(admin))
    assert response.status_code == 201, response.text
    assert response.json()["endpoint"]["url"] is None


async def test_a_console_only_partners_referral_waits_in_its_inbox(
    app: FastAPI,
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    partner_server: PartnerServer,
    worker: DeliveryWorker,
) -> None:
    await add_console_partner(http, api_key, "cem-console", services=["medical"])
    receipt = await submit(http, api_key)
    item = medical(receipt)
    assert item["partner"]["id"] == "cem-console"
    assert await worker.run_once() == 1
    [delivery] = await deliveries(app)
    assert delivery.status == "delivered"
    assert partner_server.received == []  # nothing was posted anywhere
    assert (await referral(app, item["id"])).status == "delivered"
    async with app.state.sessionmaker() as session:
        [attempt] = (await session.execute(select(DeliveryAttempt))).scalars()
        events = list((await session.execute(select(AuditEvent))).scalars())
    assert (attempt.outcome, attempt.status_code) == ("inbox", None)
    forwarded = [e for e in events if e.action == "referral.forwarded"]
    assert [e.partner_id for e in forwarded] == ["cem-console"]
    attempted = [e for e in events if e.action == "referral.attempted"]
    assert [e.data["outcome"] for e in attempted] == ["inbox"]


async def test_a_missed_deadline_moves_on_from_a_console_only_partner(
    app: FastAPI,
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    partner_server: PartnerServer,
    worker: DeliveryWorker,
    clock: Clock,
) -> None:
    await add_console_partner(http, api_key, "a-console", services=["medical"], priority=1)
    await add_partner(http, api_key, "b-webhook", partner_server.url, services=["medical"])
    receipt = await submit(http, api_key)
    item = medical(receipt)
    assert item["partner"]["id"] == "a-console"
    await worker.run_once()
    row = await referral(app, item["id"])
    assert row.deadline_at is not None
    clock.now = row.deadline_at
    clock.advance(1)
    await worker.housekeeping(force=True)
    moved = await referral(app, item["id"])
    assert (moved.partner_id, moved.tried_partner_ids) == ("b-webhook", ["a-console"])
    await worker.run_once()
    assert len(partner_server.received) == 1


async def test_withdrawal_notices_reach_a_console_only_partner(
    app: FastAPI,
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    worker: DeliveryWorker,
) -> None:
    await add_console_partner(http, api_key, "cem-console", services=["medical"])
    receipt = await submit(http, api_key)
    await worker.run_once()
    clinic = await api_key("clinic", "Caravana de la Vida")
    withdrawn = await http.post(
        f"/v1/screenings/{receipt['id']}/consent/withdraw", headers=bearer(clinic)
    )
    assert withdrawn.status_code == 200, withdrawn.text
    await worker.run_once()
    notices = [d for d in await deliveries(app) if d.event_type == "referral.revoked"]
    assert [(d.partner_id, d.status) for d in notices] == [("cem-console", "delivered")]


def test_a_console_only_partner_has_no_thin_mode_format_or_notifications() -> None:
    base = partner_document("x-console", "unused")
    del base["endpoint"]
    assert Partner.model_validate(base).endpoint.console_only
    for endpoint in ({"thin": True}, {"format": "fhir-r4"}):
        with pytest.raises(ValidationError, match="endpoint"):
            Partner.model_validate({**base, "endpoint": endpoint})
    notifications = {**base, "role": "notification_recipient", "services": []}
    with pytest.raises(ValidationError, match="notification_recipient needs an endpoint"):
        Partner.model_validate(notifications)
