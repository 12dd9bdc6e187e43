"""The demo partners' inbox verifies Standard Webhooks signatures (development only)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from standardwebhooks import Webhook

from app.main import create_app
from app.models.base import utcnow
from app.partners import service
from app.routers import demo_partners
from app.settings import Environment, Settings
from tests.conftest import KeyFactory, bearer

PARTNER_ID = "hospital-santa-rosa-mdd"


def _mounted(application: FastAPI) -> bool:
    return any(getattr(r, "path", "").startswith("/demo/") for r in application.router.routes)


@pytest.fixture
async def dev_app(settings: Settings) -> AsyncIterator[FastAPI]:
    dev = settings.model_copy(update={"env": Environment.development})
    application = create_app(dev)
    if not _mounted(application):  # until app.main mounts it itself
        assert demo_partners.install(application, dev)
    async with application.router.lifespan_context(application):
        # Idempotent: app.main's lifespan may already have synced the demo directory.
        report = await service.load_and_sync(application.state.sessionmaker, dev, now=utcnow())
        assert report is not None
        assert PARTNER_ID in report.created + report.unchanged
        yield application


@pytest.fixture
async def client(dev_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=dev_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ruta.test") as c:
        yield c


async def _secret(app: FastAPI) -> str:
    async with app.state.sessionmaker() as session:
        row = await service.get_partner(session, PARTNER_ID)
        return service.signing_secrets(app.state.settings, row, utcnow())[0]


def signed(secret: str, body: bytes, msg_id: str, at: datetime | None = None) -> dict[str, str]:
    at = at or datetime.now(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, at, body.decode()),
        "content-type": "application/json",
    }


async def test_signed_delivery_is_verified_and_listed(
    client: httpx.AsyncClient, dev_app: FastAPI, api_key: KeyFactory
) -> None:
    secret = await _secret(dev_app)
    body = json.dumps({"type": "referral.created", "referral": {"id": "r1"}}).encode()
    response = await client.post(
        f"/demo/partners/{PARTNER_ID}/inbox", content=body, headers=signed(secret, body, "msg_1")
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"received": True, "duplicate": False}
    # A retry with the same webhook-id is acknowledged and not stored twice.
    again = await client.post(
        f"/demo/partners/{PARTNER_ID}/inbox", content=body, headers=signed(secret, body, "msg_1")
    )
    assert again.json()["duplicate"] is True

    admin = bearer(await api_key("admin"))
    listed = await client.get(f"/demo/partners/{PARTNER_ID}/inbox", headers=admin)
    assert listed.status_code == 200
    items = listed.json()["items"]
    assert [i["webhook_id"] for i in items] == ["msg_1"]
    assert items[0]["payload"]["referral"]["id"] == "r1"
    clinic = bearer(await api_key("clinic", "Caravana de la Vida"))
    assert (
        await client.get(f"/demo/partners/{PARTNER_ID}/inbox", headers=clinic)
    ).status_code == 403


async def test_tampered_or_unsigned_delivery_is_rejected(
    client: httpx.AsyncClient, dev_app: FastAPI
) -> None:
    secret = await _secret(dev_app)
    body = b'{"referral":{"id":"r2"}}'
    headers = signed(secret, body, "msg_2")
    tampered = body.replace(b"r2", b"r3")
    url = f"/demo/partners/{PARTNER_ID}/inbox"
    assert (await client.post(url, content=tampered, headers=headers)).status_code == 401
    assert (await client.post(url, content=body)).status_code == 401
    wrong_key = signed(service.new_secret(), body, "msg_3")
    assert (await client.post(url, content=body, headers=wrong_key)).status_code == 401
    stale = signed(secret, body, "msg_4", datetime.now(UTC) - timedelta(hours=1))
    assert (await client.post(url, content=body, headers=stale)).status_code == 401
    garbage = {**headers, "webhook-signature": "v1"}
    assert (await client.post(url, content=body, headers=garbage)).status_code == 401
    unknown = "/demo/partners/nobody/inbox"
    assert (await client.post(unknown, content=body, headers=headers)).status_code == 401


async def test_rotation_overlap_both_secrets_verify(
    client: httpx.AsyncClient, dev_app: FastAPI
) -> None:
    old = await _secret(dev_app)
    async with dev_app.state.sessionmaker() as session:
        _row, new, _until = await service.rotate_secret(
            session, dev_app.state.settings, PARTNER_ID, now=utcnow()
        )
        await session.commit()
    url = f"/demo/partners/{PARTNER_ID}/inbox"
    for i, secret in enumerate((old, new)):
        body = b'{"n":1}'
        response = await client.post(url, content=body, headers=signed(secret, body, f"m{i}"))
        assert response.status_code == 200


async def test_not_mounted_outside_development(settings: Settings) -> None:
    application = create_app(settings)
    assert not demo_partners.install(application, settings)
    assert not any(getattr(r, "path", "").startswith("/demo/") for r in application.router.routes)
