"""Denied requests (401/403) are recorded in a transaction of their own.

``problems.install`` does not call the recorder yet; this test installs the exact handler
the integration notes give for app/problems.py.
"""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import problems
from app.audit.denials import record_denied
from app.audit.store import verify_database
from app.errors import RutaError
from app.models import AuditEvent
from app.problems import ProblemResponse, problem_response
from app.routers import audit as audit_router
from app.settings import Settings
from tests.conftest import KeyFactory, bearer


async def _ruta_error(request: Request, exc: Exception) -> ProblemResponse:
    """The handler proposed for app/problems.py."""
    assert isinstance(exc, RutaError)
    if exc.status in (401, 403):
        await record_denied(
            request, exc.status, "unauthenticated" if exc.status == 401 else "role_not_allowed"
        )
    return problem_response(exc, request)


@pytest.fixture
async def denial_app(audited: async_sessionmaker[AsyncSession], settings: Settings) -> FastAPI:
    app = FastAPI()
    problems.install(app)
    app.add_exception_handler(RutaError, _ruta_error)
    app.state.settings = settings
    app.state.sessionmaker = audited
    app.include_router(audit_router.router)
    return app


async def test_denied_requests_are_recorded_without_the_key(
    denial_app: FastAPI,
    audited: async_sessionmaker[AsyncSession],
    settings: Settings,
    app: FastAPI,
    api_key: KeyFactory,
) -> None:
    clinic_key = await api_key("clinic", "Caravana de la Vida")
    transport = httpx.ASGITransport(app=denial_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ruta.test") as http:
        assert (await http.get("/v1/audit/events")).status_code == 401
        forged = "ruta_0123456789ab_" + "x" * 43
        assert (await http.get("/v1/audit/verify", headers=bearer(forged))).status_code == 401
        assert (
            await http.get(
                "/v1/audit/export",
                headers={**bearer(clinic_key), "X-Request-ID": "Maria Quispe +51999888777"},
            )
        ).status_code == 403
    async with audited() as session:
        events = list(
            (await session.execute(select(AuditEvent).order_by(AuditEvent.seq))).scalars()
        )
        report = await verify_database(session, settings)
    assert report.ok
    assert [(e.action, e.actor_type, e.data["status_code"]) for e in events] == [
        ("request.denied", "anonymous", 401),
        ("request.denied", "anonymous", 401),
        ("request.denied", "client", 403),
    ]
    assert events[0].data["route"] == "/v1/audit/events"
    assert events[1].actor_id == "0123456789ab"  # the key id, never the key
    assert events[2].actor_role == "clinic"
    assert events[2].request_id is None  # a free-text request id is dropped
    assert events[2].data["method"] == "get"
    del app  # the api_key fixture needs the main app for its database only


async def test_a_failing_recorder_does_not_turn_a_denial_into_a_500(
    denial_app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("audit database unavailable")

    monkeypatch.setattr("app.audit.denials.record", broken)
    transport = httpx.ASGITransport(app=denial_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ruta.test") as http:
        assert (await http.get("/v1/audit/public-key")).status_code == 401
