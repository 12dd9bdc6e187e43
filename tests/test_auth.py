"""API keys and JWT bearer tokens."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import audit
from app.auth import Principal, authenticate_key, hash_key, parse_key_id, rotate_client_key
from app.errors import Conflict, NotFound, Unauthorized
from app.main import create_app
from app.models import ApiClient, Role
from app.settings import Settings
from tests.conftest import KeyFactory, bearer
from tests.factories import screening

ISSUER = "https://idp.example.org/realms/ruta"
AUDIENCE = "ruta-api"


async def test_keys_are_prefixed_and_stored_only_as_keyed_hashes(
    api_key: KeyFactory, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    key = await api_key("clinic", "Caravana de la Vida")
    assert key.startswith("ruta_")
    key_id = parse_key_id(key)
    assert key_id is not None
    async with sessionmaker() as session:
        client = (
            await session.execute(select(ApiClient).where(ApiClient.key_id == key_id))
        ).scalar_one()
    assert client.key_hash == hash_key(settings.secret_key.get_secret_value().encode(), key)
    assert key.encode() not in client.key_hash
    secret_part = key.split("_", 2)[2]
    assert len(secret_part) >= 40


@pytest.fixture
def rsa_keys(tmp_path: Path) -> tuple[Any, Path]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path = tmp_path / "idp.pem"
    path.write_bytes(pem)
    return private, path


@pytest.fixture
async def jwt_http(
    settings: Settings, rsa_keys: tuple[Any, Path]
) -> AsyncIterator[httpx.AsyncClient]:
    configured = settings.model_copy(
        update={
            "jwt_issuer": ISSUER,
            "jwt_audience": AUDIENCE,
            "jwt_public_key_file": rsa_keys[1],
        }
    )
    application: FastAPI = create_app(configured)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://ruta.test") as c:
            yield c


def _token(private: Any, *, algorithm: str = "RS256", **overrides: Any) -> str:
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "nurse-17",
        "exp": int(time.time()) + 300,
        "scope": "openid ruta:clinic",
        "org": "Caravana de la Vida",
    }
    for name, value in overrides.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return jwt.encode(claims, private, algorithm=algorithm)


async def test_a_valid_jwt_is_a_second_way_in(
    jwt_http: httpx.AsyncClient, rsa_keys: tuple[Any, Path]
) -> None:
    token = _token(rsa_keys[0])
    response = await jwt_http.post("/v1/screenings", json=screening(), headers=bearer(token))
    assert response.status_code == 201, response.text
    assert response.json()["organisation"] == "Caravana de la Vida"


@pytest.mark.parametrize(
    ("overrides", "status"),
    [
        ({"exp": int(time.time()) - 3600}, 401),
        ({"exp": None}, 401),
        ({"iss": "https://evil.example"}, 401),
        ({"iss": None}, 401),
        ({"aud": "someone-else"}, 401),
        ({"aud": None}, 401),
        ({"sub": None}, 401),
        ({"scope": "openid"}, 403),
        ({"scope": "ruta:clinic ruta:admin"}, 403),
        ({"scope": "ruta:auditor"}, 403),  # a valid auditor may not post screenings
        ({"org": None}, 403),
    ],
)
async def test_jwt_claims_are_required_and_checked(
    jwt_http: httpx.AsyncClient,
    rsa_keys: tuple[Any, Path],
    overrides: dict[str, Any],
    status: int,
) -> None:
    token = _token(rsa_keys[0], **overrides)
    response = await jwt_http.post("/v1/screenings", json=screening(), headers=bearer(token))
    assert response.status_code == status, response.text


@pytest.mark.parametrize(
    "claims",
    [
        {"scope": 7},
        {"scope": True},
        {"scope": False},
        {"scope": None, "scp": ["ruta:clinic"]},  # a null scope is not "no scope"
        {"scope": [["ruta:clinic"]]},
        {"scope": ["ruta:clinic", 3]},
        {"scope": {"ruta:clinic": True}},
        {"scope": None, "scp": 1.5},
        {"nbf": [1]},
        {"iat": {"at": 1}},
        {"exp": [int(time.time()) + 300]},
        {"sub": ["nurse-17"]},
        {"aud": [["ruta-api"]]},
    ],
)
async def test_a_signed_token_with_a_malformed_claim_is_401(
    jwt_http: httpx.AsyncClient, rsa_keys: tuple[Any, Path], claims: dict[str, Any]
) -> None:
    """Validly signed, so only the claims' shapes can be wrong: never a 500."""
    token = jwt.encode(
        {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "nurse-17",
            "exp": int(time.time()) + 300,
            "org": "Caravana de la Vida",
            **claims,
        },
        rsa_keys[0],
        algorithm="RS256",
    )
    response = await jwt_http.post("/v1/screenings", json=screening(), headers=bearer(token))
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("claims", "status"),
    [
        ({"scope": ["openid", "ruta:clinic"]}, 201),
        ({"scope": None, "scp": ["openid", "ruta:clinic"]}, 201),  # None: no scope claim
        ({"scope": None, "scp": "ruta:clinic openid"}, 201),
        ({"org": "C" * 200}, 201),
        ({"org": "C" * 201}, 403),
        ({"org": ""}, 403),
        ({"org": "Caravana\u0000de la Vida"}, 403),
        ({"org": 42}, 403),
    ],
)
async def test_scope_lists_and_the_organisation_claims_bounds(
    jwt_http: httpx.AsyncClient,
    rsa_keys: tuple[Any, Path],
    claims: dict[str, Any],
    status: int,
) -> None:
    token = _token(rsa_keys[0], **claims)
    response = await jwt_http.post("/v1/screenings", json=screening(), headers=bearer(token))
    assert response.status_code == status, response.text


async def test_jwt_algorithm_allow_list(
    jwt_http: httpx.AsyncClient, rsa_keys: tuple[Any, Path]
) -> None:
    pem = rsa_keys[1].read_text()
    unsigned = jwt.encode(
        {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "x",
            "exp": int(time.time()) + 60,
            "scope": "ruta:admin",
        },
        key="",
        algorithm="none",
    )
    other_key = ec.generate_private_key(ec.SECP256R1())
    for token in (unsigned, _token(other_key, algorithm="ES256")):
        response = await jwt_http.get("/v1/screenings/" + "0" * 32, headers=bearer(token))
        assert response.status_code == 401
    # The classic confusion attack: HS256 keyed with the public key.
    import base64
    import hashlib
    import hmac
    import json

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(
        json.dumps(
            {
                "iss": ISSUER,
                "aud": AUDIENCE,
                "sub": "x",
                "exp": int(time.time()) + 60,
                "scope": "ruta:clinic",
                "org": "Caravana de la Vida",
            }
        ).encode()
    )
    signature = hmac.new(pem.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    forged = f"{header}.{payload}.{b64(signature)}"
    response = await jwt_http.post("/v1/screenings", json=screening(), headers=bearer(forged))
    assert response.status_code == 401


def test_symmetric_algorithms_cannot_be_configured() -> None:
    with pytest.raises(ValueError, match="asymmetric only"):
        Settings(env="test", jwt_algorithms=["HS256"])  # type: ignore[arg-type]


async def test_a_rotated_out_key_works_only_inside_its_grace_period(
    app: FastAPI, api_key: KeyFactory, settings: Settings
) -> None:
    secret = settings.secret_key.get_secret_value().encode()
    old = await api_key("partner", "Hospital Santa Rosa")
    old_id = parse_key_id(old)
    rotated_at = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    maker: async_sessionmaker[AsyncSession] = app.state.sessionmaker
    async with maker() as session:
        client_id = (
            await session.execute(select(ApiClient.id).where(ApiClient.key_id == old_id))
        ).scalar_one()
        _client, new = await rotate_client_key(
            session,
            secret_key=secret,
            client_id=client_id,
            grace=timedelta(hours=1),
            now=rotated_at,
            actor=audit.system("test"),
        )
        await session.commit()

    async def who(key: str, at: datetime) -> Principal:
        async with maker() as session:
            return await authenticate_key(session, secret_key=secret, key=key, now=at)

    inside = await who(old, rotated_at + timedelta(minutes=59))
    assert (inside.client_id, inside.role, inside.organisation) == (
        client_id,
        Role.partner,
        "Hospital Santa Rosa",
    )
    for at in (rotated_at + timedelta(hours=1), rotated_at + timedelta(days=2)):
        with pytest.raises(Unauthorized):
            await who(old, at)
    # The new key does not depend on the clock; a forged key with the old id does not pass.
    assert (await who(new, rotated_at + timedelta(days=2))).client_id == client_id
    forged = f"ruta_{old_id}_{'x' * 43}"
    with pytest.raises(Unauthorized):
        await who(forged, rotated_at + timedelta(minutes=1))


async def test_rotation_refuses_unknown_and_revoked_clients_and_long_grace(
    app: FastAPI, api_key: KeyFactory, settings: Settings
) -> None:
    secret = settings.secret_key.get_secret_value().encode()
    key = await api_key("auditor")
    maker: async_sessionmaker[AsyncSession] = app.state.sessionmaker
    now = datetime(2026, 11, 30, tzinfo=UTC)
    async with maker() as session:
        client = (
            await session.execute(select(ApiClient).where(ApiClient.key_id == parse_key_id(key)))
        ).scalar_one()

        async def rotate(client_id: uuid.UUID, grace: timedelta = timedelta(0)) -> object:
            return await rotate_client_key(
                session,
                secret_key=secret,
                client_id=client_id,
                grace=grace,
                now=now,
                actor=audit.system("test"),
            )

        with pytest.raises(ValueError, match="grace period"):
            await rotate(client.id, timedelta(days=8))
        with pytest.raises(ValueError, match="grace period"):
            await rotate(client.id, timedelta(seconds=-1))
        with pytest.raises(NotFound):
            await rotate(uuid.uuid4())
        client.revoked_at = now
        with pytest.raises(Conflict):
            await rotate(client.id)
        assert client.key_id == parse_key_id(key)


async def test_key_lookups_are_cached_but_revocation_here_applies_at_once(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory, settings: Settings
) -> None:
    key = await api_key("clinic", "Caravana de la Vida")
    secret = settings.secret_key.get_secret_value().encode()
    maker = app.state.sessionmaker
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    from sqlalchemy import event, update

    engine = app.state.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        async with maker() as session:
            first = await authenticate_key(session, secret_key=secret, key=key, cache_seconds=30)
            looked_up = len(statements)
            again = await authenticate_key(session, secret_key=secret, key=key, cache_seconds=30)
        assert again == first
        assert looked_up >= 1
        assert len(statements) == looked_up  # the second lookup used no statement

        # A change no session saw (another process's UPDATE) applies within the TTL only...
        async with maker() as session:
            await session.execute(update(ApiClient).values(name="renamed"))
            await session.commit()
        async with maker() as session:
            cached = await authenticate_key(session, secret_key=secret, key=key, cache_seconds=30)
            fresh = await authenticate_key(session, secret_key=secret, key=key, cache_seconds=0)
        assert (cached.name, fresh.name) == ("test", "renamed")
    finally:
        event.remove(engine, "before_cursor_execute", count)

    # ...while a revocation committed through the ORM in this process applies at once.
    async with maker() as session:
        client = (await session.execute(select(ApiClient))).scalars().one()
        client.revoked_at = datetime.now(UTC)
        await session.commit()
    async with maker() as session:
        with pytest.raises(Unauthorized):
            await authenticate_key(session, secret_key=secret, key=key, cache_seconds=30)
    # The app's own setting caches too, and the revoked key is refused over HTTP.
    assert settings.auth_cache_seconds > 0
    reply = await http.get(f"/v1/screenings/{uuid.uuid4()}", headers=bearer(key))
    assert reply.status_code == 401
