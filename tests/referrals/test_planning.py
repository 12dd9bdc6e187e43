"""What intake plans from a decision: rows that are exactly the tables' rows, and the
non-identifying notification. Both engines."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from app.delivery.worker import DeliveryWorker
from app.models import AuditEvent, Decision, Referral
from app.referrals.planning import NewDecision, NewReferral
from tests.conftest import KeyFactory, bearer
from tests.delivery.conftest import Clock, add_partner, deliveries
from tests.delivery.partner_server import PartnerServer
from tests.factories import screening


@pytest.mark.parametrize(("planned", "model"), [(NewDecision, Decision), (NewReferral, Referral)])
def test_planned_rows_have_exactly_the_tables_columns(planned: Any, model: Any) -> None:
    """A column added to the table (or a field to the plan) without the other fails here,
    before intake would insert a row missing it."""
    fields = [f.name for f in dataclasses.fields(planned)]
    assert set(fields) == set(model.__table__.c.keys())
    assert list(planned.__slots__) == fields  # row() reads them in this order


# --- The non-identifying notification (docs/protocol.md, rule 5) ---------------------------


@pytest.fixture
async def observatory(http: httpx.AsyncClient, api_key: KeyFactory) -> AsyncIterator[PartnerServer]:
    server = PartnerServer().start()
    try:
        await add_partner(
            http,
            api_key,
            "observatory",
            server.url,
            role="notification_recipient",
            services=[],
            capacity={"available": 0, "maximum": 0},
        )
        yield server
    finally:
        server.stop()


async def test_an_adult_who_declines_is_notified_to_the_recipient_without_identifying_data(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory, observatory: PartnerServer
) -> None:
    clinic = bearer(await api_key("clinic", "Caravana de la Vida"))
    body = screening(
        subject__age=30,
        subject__unaccompanied_minor=False,
        subject__name="CANARY-NOTIFY",
        consent={"given": False, "scopes": [], "share_identifying": False},
        safety={},
    )
    created = await http.post("/v1/screenings", json=body, headers=clinic)
    decision = created.json()["decision"]
    assert decision["non_identifying_notification"] is True
    assert decision["notification_recipient"] == "observatory"
    [notice] = [d for d in await deliveries(app) if d.event_type == "notification.created"]
    assert (notice.referral_id, notice.partner_id) == (None, "observatory")
    assert str(notice.screening_id) == body["id"]

    worker = DeliveryWorker(app.state.sessionmaker, app.state.settings, clock=Clock())
    assert await worker.run_once() >= 1
    [received] = [r for r in observatory.received if b"notification.created" in r.body]
    assert received.verified
    sent = received.body.decode()
    for value in ("CANARY", body["id"], "MDD-2026-0173", "170101", '"age":'):
        assert value not in sent
    async with app.state.sessionmaker() as session:
        [event] = list(
            (
                await session.execute(
                    select(AuditEvent).where(AuditEvent.action == "notification.sent")
                )
            ).scalars()
        )
    assert str(event.screening_id) == body["id"]
    assert event.partner_id == "observatory"
    assert event.data["delivery_id"] == str(notice.id)


async def test_no_notification_for_a_child_or_an_adult_who_consents(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory, observatory: PartnerServer
) -> None:
    clinic = bearer(await api_key("clinic", "Caravana de la Vida"))
    child = screening(consent={"given": False, "scopes": [], "share_identifying": False})
    adult = screening(subject__age=30, subject__unaccompanied_minor=False)
    for body in (child, adult):
        created = await http.post("/v1/screenings", json=body, headers=clinic)
        assert created.json()["decision"]["notification_recipient"] is None
    assert not [d for d in await deliveries(app) if d.event_type == "notification.created"]


async def test_a_notification_is_due_even_with_no_recipient_in_the_directory(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    """Nothing to send it to: the decision says it is due and names no recipient."""
    clinic = bearer(await api_key("clinic", "Caravana de la Vida"))
    body = screening(
        subject__age=30,
        subject__unaccompanied_minor=False,
        consent={"given": False, "scopes": [], "share_identifying": False},
    )
    decision = (await http.post("/v1/screenings", json=body, headers=clinic)).json()["decision"]
    assert (decision["non_identifying_notification"], decision["notification_recipient"]) == (
        True,
        None,
    )
