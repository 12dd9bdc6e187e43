"""API keys: random, prefixed, shown once, stored as a keyed hash.

A key looks like ``ruta_<key id>_<secret>``. The key id finds the row; the HMAC-SHA256 of
the whole key under ``RUTA_SECRET_KEY`` is compared in constant time. A database leak alone
therefore yields no usable key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jwt
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Forbidden, Unauthorized

if TYPE_CHECKING:
    from app.audit.writer import Actor
from app.models import ApiClient, Role
from app.settings import Settings

KEY_PREFIX = "ruta_"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling. ``organisation`` scopes clinics and partners to their own data."""

    client_id: uuid.UUID
    name: str
    role: Role
    organisation: str | None


def hash_key(secret_key: bytes, key: str) -> bytes:
    return hmac.new(secret_key, key.encode(), hashlib.sha256).digest()


#: Key ids are letters only: an id is logged and audited, and a long run of digits in it
#: would look like a phone or document number to the audit trail's personal-data guard.
KEY_ID_ALPHABET = "abcdefghijkmnpqrstuvwxyz"


def generate_key() -> tuple[str, str]:
    """Return (key id, full key)."""
    key_id = "".join(secrets.choice(KEY_ID_ALPHABET) for _ in range(12))
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def parse_key_id(key: str) -> str | None:
    if not key.startswith(KEY_PREFIX):
        return None
    key_id, sep, rest = key[len(KEY_PREFIX) :].partition("_")
    if not sep or len(key_id) != 12 or not rest:
        return None
    return key_id


async def create_client(
    session: AsyncSession,
    *,
    secret_key: bytes,
    name: str,
    role: Role,
    organisation: str | None,
    actor: Principal | Actor,
) -> tuple[ApiClient, str]:
    if role in (Role.clinic, Role.partner) and not organisation:
        raise ValueError(f"a {role.value} client needs an organisation")
    key_id, key = generate_key()
    client = ApiClient(
        id=uuid.uuid4(),
        name=name,
        role=role.value,
        organisation=organisation,
        key_id=key_id,
        key_hash=hash_key(secret_key, key),
    )
    session.add(client)
    await session.flush()
    from app import audit

    await audit.record(
        session,
        action=audit.Action.client_created,
        actor=actor,
        data={"target_id": str(client.id), "role": role.value, "key_id": key_id},
    )
    return client, key


async def authenticate_key(session: AsyncSession, *, secret_key: bytes, key: str) -> Principal:
    key_id = parse_key_id(key)
    if key_id is None:
        raise Unauthorized("The API key is malformed.")
    client = (
        await session.execute(select(ApiClient).where(ApiClient.key_id == key_id))
    ).scalar_one_or_none()
    expected = client.key_hash if client is not None else b"\0" * 32
    valid = hmac.compare_digest(expected, hash_key(secret_key, key))
    if client is None or not valid or client.revoked_at is not None:
        raise Unauthorized("The API key is not valid.")
    return Principal(
        client_id=client.id,
        name=client.name,
        role=Role(client.role),
        organisation=client.organisation,
    )


#: OAuth scopes that map onto Ruta roles. A token must carry exactly one.
SCOPE_ROLES = {f"ruta:{role.value}": role for role in Role}


class JwtVerifier:
    """Bearer tokens from an external identity provider, verified with pyjwt.

    Only the configured asymmetric algorithms are accepted; ``iss``, ``aud``, ``exp`` and
    ``sub`` are required. The principal's id is a UUIDv5 of issuer and subject, so the
    audit trail names the same actor for every token of that subject.
    """

    def __init__(self, settings: Settings) -> None:
        assert settings.jwt_public_key_file is not None
        self._key = settings.jwt_public_key_file.read_text()
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._algorithms = list(settings.jwt_algorithms)
        self._org_claim = settings.jwt_organisation_claim
        self._leeway = settings.jwt_leeway_seconds

    def verify(self, token: str) -> Principal:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError:
            raise Unauthorized("The bearer token is not valid.") from None
        raw_scopes = claims.get("scope", claims.get("scp", ""))
        scopes = raw_scopes.split() if isinstance(raw_scopes, str) else list(raw_scopes)
        roles = {SCOPE_ROLES[s] for s in scopes if s in SCOPE_ROLES}
        if len(roles) != 1:
            raise Forbidden("The token must carry exactly one Ruta role scope.")
        role = roles.pop()
        organisation = claims.get(self._org_claim)
        if role in (Role.clinic, Role.partner) and not isinstance(organisation, str):
            raise Forbidden("The token has no organisation claim for this role.")
        subject = str(claims["sub"])
        return Principal(
            client_id=uuid.uuid5(uuid.NAMESPACE_URL, f"{claims['iss']}#{subject}"),
            name=f"jwt:{subject}"[:200],
            role=role,
            organisation=organisation if isinstance(organisation, str) else None,
        )
