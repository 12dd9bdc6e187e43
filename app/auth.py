"""API keys: random, prefixed, shown once, stored as a keyed hash.

A key looks like ``ruta_<key id>_<secret>``. The key id finds the row; the HMAC-SHA256 of
the whole key under ``RUTA_SECRET_KEY`` is compared in constant time. A database leak alone
therefore yields no usable key.

A key is rotated in place (:func:`rotate_client_key`): the client keeps its id, role and
organisation. With a grace period the replaced key keeps authenticating until it expires,
and every such use is recorded in the audit trail; without one it stops at once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import jwt
import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.cache import TableWatch, TtlCache
from app.errors import Conflict, Forbidden, NotFound, Unauthorized

if TYPE_CHECKING:
    from app.audit.writer import Actor
from app.models import ApiClient, Role
from app.models.base import utcnow
from app.settings import Settings

log = structlog.get_logger("ruta.auth")
KEY_PREFIX = "ruta_"
#: The longest a rotated-out key may keep working.
MAX_ROTATION_GRACE = timedelta(days=7)


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
    from app.observability import actor_fields, log_on_commit

    await audit.record(
        session,
        action=audit.Action.client_created,
        actor=actor,
        data={"target_id": str(client.id), "role": role.value, "key_id": key_id},
    )
    log_on_commit(
        session, log, "info", "api_client_created", client_id=str(client.id),
        role=role.value, key_id=key_id, **actor_fields(actor),
    )  # fmt: skip
    return client, key


async def rotate_client_key(
    session: AsyncSession,
    *,
    secret_key: bytes,
    client_id: uuid.UUID,
    grace: timedelta = timedelta(0),
    now: datetime,
    actor: Principal | Actor,
) -> tuple[ApiClient, str]:
    """Give a client a new key in place; return the client and the new key (shown once).

    With ``grace`` > 0 the replaced key keeps authenticating until ``now + grace``; a key
    still in an earlier grace period is dropped at once (only one previous key is kept).
    Raises :class:`NotFound` for an unknown client, :class:`Conflict` for a revoked one and
    :class:`ValueError` for a grace outside 0 … :data:`MAX_ROTATION_GRACE`.
    """
    if grace < timedelta(0) or grace > MAX_ROTATION_GRACE:
        raise ValueError("the grace period must be between 0 and 7 days")
    client = await session.get(ApiClient, client_id, with_for_update=True)
    if client is None:
        raise NotFound("No API client with this id.")
    if client.revoked_at is not None:
        raise Conflict("The client is revoked; its key cannot be rotated.")
    replaced = client.key_id
    key_id, key = generate_key()
    if grace > timedelta(0):
        client.previous_key_id = client.key_id
        client.previous_key_hash = client.key_hash
        client.previous_key_expires_at = now + grace
    else:
        client.previous_key_id = None
        client.previous_key_hash = None
        client.previous_key_expires_at = None
    client.key_id = key_id
    client.key_hash = hash_key(secret_key, key)
    client.key_rotated_at = now
    await session.flush()
    from app import audit
    from app.observability import actor_fields, log_on_commit

    log_on_commit(
        session, log, "info", "api_client_key_rotated", client_id=str(client.id),
        key_id=key_id, previous_key_id=replaced,
        previous_key_valid_until=client.previous_key_expires_at.isoformat()
        if client.previous_key_expires_at is not None
        else None,
        **actor_fields(actor),
    )  # fmt: skip
    await audit.record(
        session,
        action=audit.Action.client_key_rotated,
        actor=actor,
        data={
            "target_id": str(client.id),
            "key_id": key_id,
            "previous_key_id": replaced,
            "valid_until": (
                client.previous_key_expires_at.isoformat()
                if client.previous_key_expires_at is not None
                else None
            ),
        },
    )
    return client, key


async def authenticate_key(
    session: AsyncSession,
    *,
    secret_key: bytes,
    key: str,
    now: datetime | None = None,
    method: str | None = None,
    route: str | None = None,
    request_id: str | None = None,
    cache_seconds: float = 0.0,
) -> Principal:
    """The principal whose current key, or previous key within its grace period, is ``key``.

    With ``cache_seconds`` > 0 a successful current-key lookup is reused for that long (see
    :mod:`app.cache`): a revocation or rotation committed by this process applies to the
    next request, one committed by another process (``ruta clients revoke``, a replica)
    within ``cache_seconds``. Previous-key uses are never cached: each one is audited.

    A use of a previous key is recorded (``request.previous_key_used``, with ``method``,
    ``route`` and ``request_id``) and committed at once, in the caller's session, so the
    record stands even if the request then fails and its own work is rolled back.
    """
    key_id = parse_key_id(key)
    if key_id is None:
        raise Unauthorized("The API key is malformed.")
    presented = hash_key(secret_key, key)

    async def current_key() -> tuple[Principal | None, bool]:
        """The principal for a valid current key, and whether the key id is a current one."""
        row = (
            await session.execute(select(ApiClient).where(ApiClient.key_id == key_id))
        ).scalar_one_or_none()
        if row is None:
            return None, False
        if not hmac.compare_digest(row.key_hash, presented) or row.revoked_at is not None:
            return None, True
        return _principal_of(row), True

    # Only successes are cached (keyed by the key's keyed hash, never the key itself).
    known, current = await _CURRENT_KEYS.get(
        session, presented, current_key, ttl=cache_seconds, store=lambda r: r[0] is not None
    )
    if known is not None:
        return known
    client: ApiClient | None = None
    valid = False
    previous = False
    if not current:
        # Only a miss on the current keys looks at the keys in a grace period.
        client = (
            await session.execute(select(ApiClient).where(ApiClient.previous_key_id == key_id))
        ).scalar_one_or_none()
        expected = (
            client.previous_key_hash
            if client is not None and client.previous_key_hash is not None
            else b"\0" * 32
        )
        valid = hmac.compare_digest(expected, presented)
        expires = client.previous_key_expires_at if client is not None else None
        valid = valid and expires is not None and (now or utcnow()) < expires
        previous = True
    if client is None or not valid or client.revoked_at is not None:
        raise Unauthorized("The API key is not valid.")
    principal = _principal_of(client)
    if previous:
        from app import audit

        await audit.record(
            session,
            action=audit.Action.previous_key_used,
            actor=principal,
            request_id=request_id,
            data={"key_id": key_id, "method": method, "route": route},
        )
        await session.commit()
    return principal


def _principal_of(client: ApiClient) -> Principal:
    return Principal(
        client_id=client.id,
        name=client.name,
        role=Role(client.role),
        organisation=client.organisation,
    )


CLIENTS = TableWatch("api_clients", ApiClient)
_CURRENT_KEYS: TtlCache[bytes, tuple[Principal | None, bool]] = TtlCache(CLIENTS)


#: OAuth scopes that map onto Ruta roles. A token must carry exactly one.
SCOPE_ROLES = {f"ruta:{role.value}": role for role in Role}
#: An organisation claim Ruta can store with a screening or referral: 1 to 200 characters,
#: no control characters (PostgreSQL cannot store NUL).
_ORGANISATION = re.compile(r"[^\x00-\x1f\x7f]{1,200}")


def _scopes(claims: dict[str, Any]) -> list[str]:
    """The token's scopes: ``scope`` as space-separated text (RFC 8693 §4.2), or ``scp`` as
    text or a list of text (as some identity providers send it). Any other shape (a number,
    a boolean, null, a nested list) makes the token invalid: 401, never a 500."""
    raw = claims.get("scope", claims.get("scp", ""))
    if isinstance(raw, str):
        return raw.split()
    if isinstance(raw, list) and all(isinstance(scope, str) for scope in raw):
        return raw
    raise Unauthorized("The bearer token is not valid: its scope claim is not text.")


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
        roles = {SCOPE_ROLES[s] for s in _scopes(claims) if s in SCOPE_ROLES}
        if len(roles) != 1:
            raise Forbidden("The token must carry exactly one Ruta role scope.")
        role = roles.pop()
        organisation = claims.get(self._org_claim)
        if not isinstance(organisation, str) or not _ORGANISATION.fullmatch(organisation):
            organisation = None
        if role in (Role.clinic, Role.partner) and organisation is None:
            raise Forbidden(
                "The token has no organisation claim for this role (1 to 200 characters)."
            )
        subject = str(claims["sub"])
        return Principal(
            client_id=uuid.uuid5(uuid.NAMESPACE_URL, f"{claims['iss']}#{subject}"),
            name=f"jwt:{subject}"[:200],
            role=role,
            organisation=organisation,
        )


async def session_principal(
    session: AsyncSession, client_id: uuid.UUID, key_id: str, *, now: datetime
) -> Principal | None:
    """The principal of a console session opened with the key ``key_id`` of client
    ``client_id``, read again on every request: None once the client is revoked or that key
    no longer authenticates (rotated out, its grace period over), so the session ends with
    the key it was opened with."""
    client = await session.get(ApiClient, client_id)
    if client is None or client.revoked_at is not None:
        return None
    current = client.key_id == key_id
    in_grace = (
        client.previous_key_id == key_id
        and client.previous_key_expires_at is not None
        and now < client.previous_key_expires_at
    )
    return _principal_of(client) if current or in_grace else None
