"""Admin partner endpoints, on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.models import PartnerRow
from app.models.base import utcnow
from app.partners import service
from app.partners.directory import (
    DEMO_DIRECTORY,
    PartnerStatus,
    directory_env,
    load_directory,
)
from app.routers import partners as partners_router
from app.settings import Environment, Settings
from tests.conftest import KeyFactory, bearer

NEW_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVowMTIzNDU="  # 32 bytes

PARTNER: dict[str, Any] = {
    "id": "hospital-demo",
    "organisation": {"id": "hospital-demo", "name": "Hospital Demo"},
    "name": "Hospital Demo (test)",
    "role": "health_facility",
    "services": ["medical"],
    "service_area": {"regions": ["Madre de Dios"]},
    "eligibility": {"min_age": 0},
    "languages": ["es", "qu"],
    "capacity": {"available": 3, "maximum": 10},
    "endpoint": {"url": "https://hospital.example.org/ruta", "secrets": [NEW_SECRET]},
}


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    app.include_router(partners_router.router)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ruta.test") as c:
        yield c


@pytest.fixture
async def admin(api_key: KeyFactory) -> dict[str, str]:
    return bearer(await api_key("admin"))


def assert_no_secret(response: httpx.Response) -> None:
    assert "whsec_" not in response.text
    assert NEW_SECRET[6:] not in response.text


async def test_create_get_list_never_show_secrets(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    created = await client.post("/v1/partners", json=PARTNER, headers=admin)
    assert created.status_code == 201, created.text
    assert_no_secret(created)
    body = created.json()
    assert body["endpoint"]["has_signing_secret"] is True
    assert body["service_area"]["regions"] == ["madre_de_dios"]
    assert body["source"] == "api"
    assert created.headers["location"] == "/v1/partners/hospital-demo"

    got = await client.get("/v1/partners/hospital-demo", headers=admin)
    assert got.status_code == 200
    assert_no_secret(got)
    listed = await client.get("/v1/partners", headers=admin)
    assert [p["id"] for p in listed.json()["items"]] == ["hospital-demo"]
    assert_no_secret(listed)

    again = await client.post("/v1/partners", json=PARTNER, headers=admin)
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"


async def test_cursor_pagination(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    for i in range(5):
        body = copy.deepcopy(PARTNER)
        body["id"] = f"p{i}"
        del body["endpoint"]["secrets"]
        assert (await client.post("/v1/partners", json=body, headers=admin)).status_code == 201
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/partners", params=params, headers=admin)).json()
        seen += [p["id"] for p in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["p0", "p1", "p2", "p3", "p4"]
    bad = await client.get("/v1/partners", params={"cursor": "%%%"}, headers=admin)
    assert bad.status_code == 400


async def test_update_pause_resume(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    await client.post("/v1/partners", json=PARTNER, headers=admin)
    patched = await client.patch(
        "/v1/partners/hospital-demo",
        json={"priority": 5, "capacity": {"available": 0}, "endpoint": {"thin": True}},
        headers=admin,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["priority"] == 5
    assert patched.json()["capacity"]["available"] == 0
    assert patched.json()["endpoint"]["thin"] is True
    assert_no_secret(patched)

    paused = await client.post("/v1/partners/hospital-demo/pause", headers=admin)
    assert paused.json()["status"] == "paused"
    assert_no_secret(paused)
    resumed = await client.post("/v1/partners/hospital-demo/resume", headers=admin)
    assert resumed.json()["status"] == "active"
    missing = await client.post("/v1/partners/nope/pause", headers=admin)
    assert missing.status_code == 404


async def test_secrets_cannot_be_set_by_patch(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await client.post("/v1/partners", json=PARTNER, headers=admin)
    response = await client.patch(
        "/v1/partners/hospital-demo", json={"endpoint": {"secrets": [NEW_SECRET]}}, headers=admin
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["path"] == "endpoint.secrets"
    assert_no_secret(response)


async def test_rotate_returns_the_secret_once_and_keeps_the_old_one_valid(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    await client.post("/v1/partners", json=PARTNER, headers=admin)
    rotated = await client.post(
        "/v1/partners/hospital-demo/secrets/rotate", params={"overlap_hours": 2}, headers=admin
    )
    assert rotated.status_code == 200, rotated.text
    assert rotated.headers["cache-control"] == "no-store"
    new = rotated.json()["secret"]
    assert new.startswith("whsec_")
    assert new != NEW_SECRET
    assert rotated.json()["previous_valid_until"] is not None

    for path in ("/v1/partners/hospital-demo", "/v1/partners"):
        response = await client.get(path, headers=admin)
        assert new not in response.text
        assert_no_secret(response)

    async with sessionmaker() as session:
        row = (await session.execute(select(PartnerRow))).scalar_one()
        assert new.encode() not in (row.secrets_ct or b"")  # stored encrypted
        assert service.signing_secrets(settings, row, utcnow()) == [new, NEW_SECRET]
        from datetime import timedelta

        later = utcnow() + timedelta(hours=3)
        assert service.signing_secrets(settings, row, later) == [new]


@pytest.mark.parametrize("role", ["clinic", "partner", "auditor"])
async def test_non_admin_roles_get_403(
    client: httpx.AsyncClient, api_key: KeyFactory, role: str
) -> None:
    key = bearer(await api_key(role, "Hospital Demo" if role != "auditor" else None))
    for method, path in [
        ("GET", "/v1/partners"),
        ("GET", "/v1/partners/x"),
        ("POST", "/v1/partners"),
        ("PATCH", "/v1/partners/x"),
        ("POST", "/v1/partners/x/pause"),
        ("POST", "/v1/partners/x/secrets/rotate"),
    ]:
        response = await client.request(method, path, json=PARTNER, headers=key)
        assert response.status_code == 403, (role, method, path)
        assert_no_secret(response)
    anonymous = await client.get("/v1/partners")
    assert anonymous.status_code == 401


async def test_validation_errors_name_the_field_and_do_not_echo(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    body = copy.deepcopy(PARTNER)
    body["eligibility"] = {"min_age": 200}
    body["endpoint"]["secrets"] = ["whsec_not base64 SECRETCANARY"]
    response = await client.post("/v1/partners", json=body, headers=admin)
    assert response.status_code == 422
    paths = {e["path"] for e in response.json()["errors"]}
    assert "eligibility.min_age" in paths
    assert any(p.startswith("endpoint.secrets") for p in paths)
    assert "SECRETCANARY" not in response.text


@pytest.mark.parametrize(
    "value", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59.999999-14:00", "2026-11-20T10:00"]
)
async def test_capacity_updated_at_needs_an_offset_and_a_time_utc_can_hold(
    client: httpx.AsyncClient, admin: dict[str, str], value: str
) -> None:
    body = copy.deepcopy(PARTNER)
    body["capacity"]["updated_at"] = value
    response = await client.post("/v1/partners", json=body, headers=admin)
    assert response.status_code == 422, response.text
    assert [e["path"] for e in response.json()["errors"]] == ["capacity.updated_at"]


async def test_url_policy_outside_development(
    app: FastAPI, settings: Settings, admin: dict[str, str]
) -> None:
    app.include_router(partners_router.router)
    app.state.settings = settings.model_copy(update={"env": Environment.production})
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ruta.test") as c:
        for url in ("http://hospital.example.org/x", "https://127.0.0.1/x", "https://localhost/x"):
            body = copy.deepcopy(PARTNER)
            body["endpoint"]["url"] = url
            response = await c.post("/v1/partners", json=body, headers=admin)
            assert response.status_code == 422, url
            assert response.json()["errors"][0]["path"] == "endpoint.url"
            assert url not in response.text
        ok = await c.post("/v1/partners", json=PARTNER, headers=admin)
        assert ok.status_code == 201


async def test_partner_reports_own_capacity(
    client: httpx.AsyncClient, admin: dict[str, str], api_key: KeyFactory
) -> None:
    await client.post("/v1/partners", json=PARTNER, headers=admin)
    own = bearer(await api_key("partner", PARTNER["organisation"]["id"]))
    other = bearer(await api_key("partner", "Otra ONG"))
    # The organisation's display name is not its identity.
    by_name = bearer(await api_key("partner", PARTNER["organisation"]["name"]))
    ok = await client.patch("/v1/partners/me/capacity", json={"available": 7}, headers=own)
    assert ok.status_code == 200, ok.text
    assert ok.json()[0]["capacity"]["available"] == 7
    assert_no_secret(ok)
    for stranger in (other, by_name):
        assert (
            await client.patch("/v1/partners/me/capacity", json={"available": 1}, headers=stranger)
        ).status_code == 404
    too_many = await client.patch("/v1/partners/me/capacity", json={"available": 99}, headers=own)
    assert too_many.status_code == 409
    # Every capacity change is in the audit trail, with the partner client as the actor.
    auditor = bearer(await api_key("auditor"))
    events = (
        await client.get(
            "/v1/audit/events", params={"action": "admin.partner_updated"}, headers=auditor
        )
    ).json()["events"]
    [changed] = [e for e in events if e["actor"]["role"] == "partner"]
    assert changed["data"] == {"target_id": PARTNER["id"], "changed": ["capacity"]}
    assert changed["refs"]["partner_id"] == PARTNER["id"]


async def test_sync_demo_directory_keeps_runtime_state_and_overrides(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    directory = load_directory(
        DEMO_DIRECTORY, relaxed=True, env=directory_env(settings.public_base_url)
    )
    now = utcnow()
    async with sessionmaker() as session:
        report = await service.sync_directory(session, settings, directory, now=now)
        await session.commit()
    assert len(report.created) == len(directory.partners)
    async with sessionmaker() as session:
        await service.set_status(session, "hospital-santa-rosa-mdd", PartnerStatus.paused, now=now)
        await service.update_partner(
            session, "hospital-santa-rosa-mdd", {"priority": 1, "capacity.available": 0}, now=now
        )
        await session.commit()
    async with sessionmaker() as session:
        report = await service.sync_directory(session, settings, directory, now=now)
        await session.commit()
    assert report.created == []
    # The file still says 10; the admin's 1 is kept, and the difference is reported.
    assert report.kept_overrides == ["hospital-santa-rosa-mdd: priority"]
    assert report.updated == []
    async with sessionmaker() as session:
        row = await service.get_partner(session, "hospital-santa-rosa-mdd")
        assert (row.status, row.priority, row.capacity_available) == ("paused", 1, 0)
        assert row.overridden == ["priority"]
        assert len(service.signing_secrets(settings, row, now)) == 1
        partners = await service.directory_partners(session)
    assert len(partners) == len(directory.partners)
