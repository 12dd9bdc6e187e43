"""``ruta clients rotate``: a new key in place, an optional grace period for the old one,
every step audited; and revocation of both keys."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth import parse_key_id
from app.models import ApiClient, AuditEvent
from app.models.base import utcnow
from tests.cli.conftest import Ruta
from tests.conftest import bearer

ORG = "Caravana de la Vida"


async def cli(ruta: Ruta, *args: str) -> Any:
    return await asyncio.to_thread(ruta, *args)


async def create(ruta: Ruta, name: str = "tablet 7") -> tuple[str, str]:
    """Create a clinic client; return (client id, key)."""
    result = await cli(ruta, "clients", "create", "--name", name, "--role", "clinic",
                       "--organisation", ORG)  # fmt: skip
    assert result.exit_code == 0, result.output
    key = result.stdout.strip().splitlines()[-1]
    client_id = result.stderr.split(" client ")[1].split()[0]
    return str(uuid.UUID(client_id)), key


async def rotate(ruta: Ruta, client_id: str, *options: str) -> str:
    result = await cli(ruta, "clients", "rotate", client_id, *options)
    assert result.exit_code == 0, result.output
    # The new key is the last line, printed exactly once, and only on stdout.
    [key] = result.stdout.strip().splitlines()
    assert key.startswith("ruta_")
    assert key not in result.stderr
    return str(key)


async def works(http: httpx.AsyncClient, key: str) -> bool:
    response = await http.get("/v1/rules", headers=bearer(key))
    assert response.status_code in (200, 401), response.text
    return response.status_code == 200


async def events(sessionmaker: async_sessionmaker[AsyncSession], action: str) -> list[AuditEvent]:
    async with sessionmaker() as session:
        return list(
            (
                await session.execute(
                    select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)
                )
            ).scalars()
        )


async def test_rotate_without_grace_old_key_stops_at_once(
    ruta: Ruta, http: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    client_id, old = await create(ruta)
    assert await works(http, old)
    new = await rotate(ruta, client_id)
    assert new != old
    assert not await works(http, old)
    assert await works(http, new)

    # Same client: id, role and organisation are kept; one row, no previous key held.
    async with sessionmaker() as session:
        [client] = (await session.execute(select(ApiClient))).scalars().all()
    assert (str(client.id), client.role, client.organisation) == (client_id, "clinic", ORG)
    assert client.key_id == parse_key_id(new)
    assert client.previous_key_id is None
    assert client.previous_key_hash is None

    [rotated] = await events(sessionmaker, "admin.client_key_rotated")
    assert rotated.actor_type == "system"
    assert rotated.data == {
        "target_id": client_id,
        "key_id": parse_key_id(new),
        "previous_key_id": parse_key_id(old),
        "valid_until": None,
    }
    # A failed attempt with the old key is a denial, not a previous-key use.
    assert await events(sessionmaker, "request.previous_key_used") == []


async def test_rotate_with_grace_old_key_works_until_it_expires(
    ruta: Ruta, http: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    client_id, old = await create(ruta)
    before = utcnow()
    result = await cli(ruta, "clients", "rotate", client_id, "--grace", "24h")
    assert result.exit_code == 0, result.output
    new = result.stdout.strip()
    assert "keeps working until" in result.stderr

    assert await works(http, old)
    assert await works(http, new)
    # The old key acts as the same client.
    screening_id = uuid.uuid4()
    missing = await http.get(f"/v1/screenings/{screening_id}", headers=bearer(old))
    assert missing.status_code == 404

    [rotated] = await events(sessionmaker, "admin.client_key_rotated")
    assert rotated.data["previous_key_id"] == parse_key_id(old)
    async with sessionmaker() as session:
        client = await session.get(ApiClient, uuid.UUID(client_id))
    assert client is not None
    assert client.previous_key_expires_at is not None
    expected = before + timedelta(hours=24)
    assert abs(client.previous_key_expires_at - expected) < timedelta(minutes=1)
    assert rotated.data["valid_until"] == client.previous_key_expires_at.isoformat()

    # Every use of the previous key is audited, even a request that then fails (the 404).
    uses = await events(sessionmaker, "request.previous_key_used")
    assert len(uses) == 2
    assert {u.actor_id for u in uses} == {client_id}
    assert [u.data for u in uses] == [
        {"key_id": parse_key_id(old), "method": "get", "route": "/v1/rules"},
        {
            "key_id": parse_key_id(old),
            "method": "get",
            "route": "/v1/screenings/{screening_id}",
        },
    ]
    assert all(u.request_id for u in uses)
    # Uses of the new key are not.
    assert await works(http, new)
    assert len(await events(sessionmaker, "request.previous_key_used")) == 2

    # After the grace period only the new key works.
    async with sessionmaker() as session:
        await session.execute(
            update(ApiClient)
            .where(ApiClient.id == uuid.UUID(client_id))
            .values(previous_key_expires_at=utcnow() - timedelta(seconds=1))
        )
        await session.commit()
    assert not await works(http, old)
    assert await works(http, new)
    listed = await cli(ruta, "clients", "list")
    assert "previous key" not in listed.stdout


async def test_a_second_rotation_drops_the_first_previous_key(
    ruta: Ruta, http: httpx.AsyncClient
) -> None:
    client_id, first = await create(ruta)
    second = await rotate(ruta, client_id, "--grace-seconds", "3600")
    listed = await cli(ruta, "clients", "list")
    assert f"previous key {parse_key_id(first)} until" in listed.stdout
    third = await rotate(ruta, client_id, "--grace", "1h")
    assert not await works(http, first)
    assert await works(http, second)
    assert await works(http, third)


async def test_revoking_a_rotated_client_revokes_both_keys(
    ruta: Ruta, http: httpx.AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    client_id, old = await create(ruta)
    new = await rotate(ruta, client_id, "--grace", "7d")
    assert await works(http, old)
    assert await works(http, new)
    revoked = await cli(ruta, "clients", "revoke", client_id)
    assert revoked.exit_code == 0, revoked.output
    assert not await works(http, old)
    assert not await works(http, new)
    [event] = await events(sessionmaker, "admin.client_revoked")
    assert event.data["key_id"] == parse_key_id(new)
    assert event.data["previous_key_id"] == parse_key_id(old)

    again = await cli(ruta, "clients", "rotate", client_id)
    assert again.exit_code == 1
    assert "revoked" in again.stderr
    assert again.stdout == ""
    assert len(await events(sessionmaker, "admin.client_key_rotated")) == 1


def test_rotate_refuses_unknown_clients_and_bad_options(ruta: Ruta) -> None:
    unknown = ruta("clients", "rotate", str(uuid.uuid4()))
    assert unknown.exit_code == 1
    assert "no such client" in unknown.stderr
    assert unknown.stdout == ""
    assert ruta("clients", "rotate", "not-an-id").exit_code == 2
    created = ruta("clients", "create", "--name", "x", "--role", "auditor")
    client_id = created.stderr.split(" client ")[1].split()[0]
    for options in (
        ["--grace", "soon"],
        ["--grace", "8d"],
        ["--grace-seconds", "-1"],
        ["--grace", "1h", "--grace-seconds", "60"],
    ):
        result = ruta("clients", "rotate", client_id, *options)
        assert result.exit_code == 2, options
        assert result.stdout == ""
    # None of them rotated anything: the key created above is still the only one.
    listed = ruta("clients", "list")
    assert created.stdout.strip().split("_")[1] in listed.stdout
