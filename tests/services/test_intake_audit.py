"""Intake writes its audit events in the same transaction as the screening."""

from __future__ import annotations

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.models.audit import AuditEvent
from tests.conftest import KeyFactory, bearer
from tests.factories import screening


async def _events(sessionmaker: async_sessionmaker[AsyncSession]) -> list[AuditEvent]:
    async with sessionmaker() as session:
        return list((await session.execute(select(AuditEvent).order_by(AuditEvent.seq))).scalars())


async def test_received_replayed_and_denied_are_audited_without_personal_data(
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    key = await api_key("clinic", "Caravana de la Vida")
    body = screening(subject__name="CANARY-AUDIT-NAME", notes="CANARY-AUDIT-NOTE")
    assert (await http.post("/v1/screenings", json=body, headers=bearer(key))).status_code == 201
    assert (await http.post("/v1/screenings", json=body, headers=bearer(key))).status_code == 200
    auditor = await api_key("auditor")
    denied = await http.post("/v1/screenings", json=screening(), headers=bearer(auditor))
    assert denied.status_code == 403
    anonymous = await http.post("/v1/screenings", json=screening())
    assert anonymous.status_code == 401

    events = await _events(sessionmaker)
    actions = [e.action for e in events]
    assert actions.count("screening.received") == 1
    assert actions.count("screening.replayed") == 1
    assert actions.count("request.denied") == 2
    received = next(e for e in events if e.action == "screening.received")
    assert str(received.screening_id) == body["id"]
    assert received.data["personal_fields"] == [
        "notes",
        "safety.safe_contact",
        "subject.name",
    ]
    # The seq numbers are gapless from 1.
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    dump = repr([(e.data, e.actor_id, e.actor_role, e.action) for e in events])
    assert "CANARY" not in dump


async def test_invalid_screening_leaves_no_received_event(
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    key = await api_key("clinic", "Caravana de la Vida")
    body = screening(source__screened_at="2099-01-01T00:00:00Z")
    assert (await http.post("/v1/screenings", json=body, headers=bearer(key))).status_code == 422
    actions = [e.action for e in await _events(sessionmaker)]
    assert "screening.received" not in actions
