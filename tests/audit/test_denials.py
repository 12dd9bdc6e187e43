"""Denied requests (401/403) are recorded in a transaction of their own, by the one
problem handler every route shares (app/problems.py)."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.store import verify_database
from app.auth import parse_key_id
from app.models import ApiClient, AuditEvent
from app.models.base import utcnow
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
    assert events[1].actor_id is None  # a key id Ruta never issued is the caller's text
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


async def _denials(audited: async_sessionmaker[AsyncSession]) -> list[AuditEvent]:
    async with audited() as session:
        return [
            e
            for e in (await session.execute(select(AuditEvent).order_by(AuditEvent.seq)))
            .scalars()
            .all()
            if e.action == "request.denied"
        ]


async def test_an_unauthenticated_callers_request_id_never_reaches_the_trail(
    http: httpx.AsyncClient,
    audited: async_sessionmaker[AsyncSession],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A short code the request-context middleware accepts ("mariaquispe") is still the
    caller's text: an unauthenticated denial carries an id Ruta generated instead, and one
    log line ties the two together."""
    sent = "mariaquispe"
    response = await http.get("/v1/audit/events", headers={"X-Request-ID": sent})
    assert response.status_code == 401
    no_header = await http.get("/v1/audit/events")
    [first, second] = await _denials(audited)
    assert first.request_id is not None
    assert re.fullmatch(r"[0-9a-f]{32}", first.request_id)
    assert sent not in first.request_id
    # Without a header the id the middleware generated (and answered with) is kept.
    assert second.request_id == no_header.headers["x-request-id"]
    [tie] = [
        json.loads(line)
        for line in capsys.readouterr().err.splitlines()
        if "request_denied_unauthenticated" in line
    ]
    assert (tie["request_id"], tie["audit_request_id"]) == (sent, first.request_id)


async def test_an_authenticated_callers_request_id_is_kept_when_it_is_a_short_code(
    http: httpx.AsyncClient, audited: async_sessionmaker[AsyncSession], api_key: KeyFactory
) -> None:
    clinic = bearer(await api_key("clinic", "Caravana de la Vida"))
    sent = "tablet3-req-0042"
    response = await http.get("/v1/audit/events", headers={**clinic, "X-Request-ID": sent})
    assert response.status_code == 403
    [event] = await _denials(audited)
    assert (event.actor_role, event.request_id) == ("clinic", sent)


async def test_only_a_key_id_ruta_issued_is_recorded_for_a_failed_key(
    http: httpx.AsyncClient,
    audited: async_sessionmaker[AsyncSession],
    api_key: KeyFactory,
) -> None:
    real = await api_key("clinic", "Caravana de la Vida")
    real_id = parse_key_id(real)
    wrong_secret = f"ruta_{real_id}_" + "x" * 43
    invented = "ruta_mariaquispex_" + "x" * 43  # the caller chose the twelve letters
    for key in (wrong_secret, invented):
        response = await http.get("/v1/audit/events", headers=bearer(key))
        assert response.status_code == 401
    async with audited() as session:
        client = (await session.execute(select(ApiClient))).scalar_one()
        client.revoked_at = utcnow()
        await session.commit()
    # A revoked key is a key Ruta issued: its id is still worth recording.
    assert (await http.get("/v1/audit/events", headers=bearer(real))).status_code == 401
    events = await _denials(audited)
    assert [e.actor_id for e in events] == [real_id, None, real_id]
