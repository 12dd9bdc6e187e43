"""Denied requests (401/403) are recorded in a transaction of their own, by the one
problem handler every route shares (app/problems.py)."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.store import verify_database
from app.models import AuditEvent
from app.settings import Settings
from tests.conftest import KeyFactory, bearer


async def test_denied_requests_are_recorded_without_the_key(
    http: httpx.AsyncClient,
    audited: async_sessionmaker[AsyncSession],
    settings: Settings,
    api_key: KeyFactory,
) -> None:
    clinic_key = await api_key("clinic", "Caravana de la Vida")
    assert (await http.get("/v1/audit/events")).status_code == 401
    forged = "ruta_abcdefghijkm_" + "x" * 43
    assert (await http.get("/v1/audit/verify", headers=bearer(forged))).status_code == 401
    assert (
        await http.get(
            "/v1/audit/export",
            headers={**bearer(clinic_key), "X-Request-ID": "Maria Quispe +51999888777"},
        )
    ).status_code == 403
    async with audited() as session:
        events = [
            e
            for e in (await session.execute(select(AuditEvent).order_by(AuditEvent.seq))).scalars()
            if e.action == "request.denied"
        ]
        report = await verify_database(session, settings)
    assert report.ok
    assert [(e.action, e.actor_type, e.data["status_code"]) for e in events] == [
        ("request.denied", "anonymous", 401),
        ("request.denied", "anonymous", 401),
        ("request.denied", "client", 403),
    ]
    assert events[0].data["route"] == "/v1/audit/events"
    assert events[1].actor_id == "abcdefghijkm"  # the key id, never the key
    assert events[2].actor_role == "clinic"
    # A free-text request id is replaced by the one the service generated.
    assert events[2].request_id is not None
    assert "Quispe" not in events[2].request_id
    assert len(events[2].request_id) == 32
    assert events[2].data["method"] == "get"


async def test_a_denial_on_a_route_with_a_converter_records_its_template(
    http: httpx.AsyncClient, audited: async_sessionmaker[AsyncSession]
) -> None:
    url = "/v1/screenings/6c0b1f7e-0a53-4b51-9d55-3c3f4c2b8e10"
    assert (await http.get(url)).status_code == 401
    async with audited() as session:
        [event] = [
            e
            for e in (await session.execute(select(AuditEvent))).scalars()
            if e.action == "request.denied"
        ]
    assert event.data["route"] == "/v1/screenings/{screening_id}"


async def test_a_failing_recorder_does_not_turn_a_denial_into_a_500(
    http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("audit database unavailable")

    monkeypatch.setattr("app.audit.denials.record", broken)
    assert (await http.get("/v1/audit/public-key")).status_code == 401
