"""Console sessions: sign in once with an API key (or a JWT), then a server-side session.

The cookie carries a random token; the database keeps only its HMAC under
``RUTA_SECRET_KEY`` (:class:`app.models.ConsoleSession`). A session ends on sign-out, after
``RUTA_CONSOLE_IDLE_MINUTES`` without a request, ``RUTA_CONSOLE_SESSION_HOURS`` after
sign-in (a JWT's own expiry if sooner), or as soon as the key it was opened with stops
authenticating (revoked, or rotated out). Sign-ins, failed sign-ins and sign-outs are
audited; the key itself is never stored or recorded, only its key id when Ruta issued it.

Everything here runs in the caller's transaction and only flushes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app import audit
from app.audit import Action
from app.auth import (
    KEY_PREFIX,
    JwtVerifier,
    Principal,
    authenticate_key,
    parse_key_id,
    session_principal,
)
from app.errors import Unauthorized
from app.models import ApiClient, ConsoleSession, Role
from app.settings import Settings

#: The session cookie (HttpOnly, SameSite=Strict, Secure in production, path /console).
COOKIE = "ruta_console"
#: Before sign-in: the double-submit token of the sign-in form (login CSRF).
SIGN_IN_COOKIE = "ruta_console_signin"
#: ``last_seen_at`` is written at most this often (the idle timeout's resolution).
TOUCH_EVERY = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class Signed:
    """A request's signed-in person: who, and the session's form token."""

    principal: Principal
    csrf_token: str
    session_id: str


def token_hash(settings: Settings, token: str) -> str:
    key = settings.secret_key.get_secret_value().encode()
    return hmac.new(key, token.encode(), hashlib.sha256).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def same_token(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison of two form tokens; a missing one never matches."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


async def _issued_key_id(session: AsyncSession, credential: str) -> str | None:
    """The key id of ``credential`` if Ruta issued that key (a wrong secret for a real key is
    worth recording; an invented id is the caller's own text, never stored)."""
    key_id = parse_key_id(credential)
    if key_id is None:
        return None
    found = await session.execute(
        select(ApiClient.id)
        .where(or_(ApiClient.key_id == key_id, ApiClient.previous_key_id == key_id))
        .limit(1)
    )
    return key_id if found.first() is not None else None


@dataclass(frozen=True, slots=True)
class _Verified:
    principal: Principal
    via: str
    key_id: str | None
    not_after: datetime | None


async def _verify(
    session: AsyncSession,
    settings: Settings,
    verifier: JwtVerifier | None,
    credential: str,
    *,
    now: datetime,
) -> _Verified:
    """The same checks as an API call's ``Authorization: Bearer`` (app/deps.py)."""
    if credential.startswith(KEY_PREFIX) or verifier is None:
        principal = await authenticate_key(
            session,
            secret_key=settings.secret_key.get_secret_value().encode(),
            key=credential,
            now=now,
            method="post",
            route="/console/sign-in",
        )
        return _Verified(principal, "key", parse_key_id(credential), None)
    principal = verifier.verify(credential)
    claims: dict[str, Any] = jwt.decode(credential, options={"verify_signature": False})
    return _Verified(principal, "jwt", None, datetime.fromtimestamp(int(claims["exp"]), UTC))


async def sign_in(
    session: AsyncSession,
    settings: Settings,
    verifier: JwtVerifier | None,
    credential: str,
    *,
    now: datetime,
) -> tuple[Signed, str]:
    """Open a session for the holder of ``credential``; return it and the cookie's token.

    Raises :class:`Unauthorized` (recorded as ``console.sign_in_failed``) for a key or
    token that does not authenticate."""
    credential = credential.strip()
    via = "key" if credential.startswith(KEY_PREFIX) or verifier is None else "jwt"
    try:
        verified = await _verify(session, settings, verifier, credential, now=now)
    except Unauthorized:
        await audit.record(
            session,
            action=Action.console_sign_in_failed,
            actor=audit.anonymous(),
            data={
                "reason": "invalid_credential",
                "via": via,
                "key_id": await _issued_key_id(session, credential),
            },
        )
        raise
    # Ended sessions are removed as new ones begin: the table holds live sessions only.
    await session.execute(
        delete(ConsoleSession)
        .where(ConsoleSession.expires_at < now)
        .execution_options(synchronize_session=False)
    )
    token = new_token()
    expires = now + timedelta(hours=settings.console_session_hours)
    if verified.not_after is not None:
        expires = min(expires, verified.not_after)
    principal = verified.principal
    row = ConsoleSession(
        id=token_hash(settings, token),
        client_id=principal.client_id,
        via=verified.via,
        key_id=verified.key_id,
        name=principal.name[:200],
        role=principal.role.value,
        organisation=principal.organisation,
        csrf_token=new_token(),
        created_at=now,
        last_seen_at=now,
        expires_at=expires,
    )
    session.add(row)
    await audit.record(
        session,
        action=Action.console_signed_in,
        actor=principal,
        data={"role": principal.role.value, "via": verified.via, "key_id": verified.key_id},
    )
    await session.flush()
    return Signed(principal, row.csrf_token, row.id), token


async def current(
    session: AsyncSession, settings: Settings, token: str, *, now: datetime
) -> Signed | None:
    """The live session the cookie's ``token`` names, or None (unknown, ended, idle too
    long, or its key no longer authenticates; an ended session's row is removed)."""
    row = await session.get(ConsoleSession, token_hash(settings, token))
    if row is None:
        return None
    idle = timedelta(minutes=settings.console_idle_minutes)
    principal: Principal | None
    if now >= row.expires_at or now - row.last_seen_at >= idle:
        principal = None
    elif row.via == "key":
        assert row.key_id is not None
        principal = await session_principal(session, row.client_id, row.key_id, now=now)
    else:
        principal = Principal(
            client_id=row.client_id,
            name=row.name,
            role=Role(row.role),
            organisation=row.organisation,
        )
    if principal is None:
        await session.delete(row)
        await session.flush()
        return None
    if now - row.last_seen_at >= TOUCH_EVERY:
        row.last_seen_at = now
        await session.flush()
    return Signed(principal, row.csrf_token, row.id)


async def sign_out(session: AsyncSession, signed: Signed) -> None:
    await session.execute(
        delete(ConsoleSession)
        .where(ConsoleSession.id == signed.session_id)
        .execution_options(synchronize_session=False)
    )
    await audit.record(
        session,
        action=Action.console_signed_out,
        actor=signed.principal,
        data={"reason": "signed_out"},
    )
