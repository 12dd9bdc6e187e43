"""Recording denied requests (401/403, and 410 for data that may no longer be read).

The request's own transaction is rolled back when it fails, so a denial is recorded in a
transaction of its own. What is kept: the route template (never the concrete path, which may
hold ids), the method, the status, the caller if known (client id and role) or, for an
unauthenticated caller, the key id of a key Ruta issued; never the key, the body or the
query.

The trail is append-only and cannot be erased, so an unauthenticated caller writes none of
its own text into it: not the id of a key Ruta never issued (``ruta_<12 letters>_…`` lets a
caller choose the letters), not its ``X-Request-ID``. Such a denial gets a request id Ruta
generates, and one log line ties it to the caller's id (logs can be rotated; the trail
cannot).
"""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from fastapi import Request
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.vocabulary import REF_RE, ROUTE_RE, Action
from app.audit.writer import Actor, actor_of, anonymous, attach, record
from app.auth import Principal, parse_key_id
from app.models import ApiClient
from app.settings import Settings

log = structlog.get_logger("ruta.audit")


def route_template(request: Request) -> str | None:
    route: Any = request.scope.get("route")
    # The template as declared ("/v1/screenings/{screening_id}"), not with its converters.
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return path if isinstance(path, str) and ROUTE_RE.fullmatch(path) else None


async def _issued_key_id(session: AsyncSession, request: Request) -> str | None:
    """The key id of the presented key if Ruta issued it (a current or rotated-out key,
    revoked or not): a wrong secret for a real key is worth recording, an invented id is
    the caller's text."""
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    key_id = parse_key_id(credentials.strip()) if scheme.lower() == "bearer" else None
    if key_id is None:
        return None
    issued = await session.execute(
        select(ApiClient.id)
        .where(or_(ApiClient.key_id == key_id, ApiClient.previous_key_id == key_id))
        .limit(1)
    )
    return key_id if issued.first() is not None else None


def _request_id(request: Request, authenticated: bool) -> str | None:
    """The request id the event carries: the one the request-context middleware accepted
    (a short code) or generated; for an unauthenticated caller never its own."""
    value = getattr(request.state, "request_id", None)
    if not isinstance(value, str):
        return None
    if not authenticated and value == request.headers.get("x-request-id"):
        generated = uuid.uuid4().hex
        log.info("request_denied_unauthenticated", audit_request_id=generated)
        return generated
    return value if REF_RE.fullmatch(value) and not value.isdigit() else None


async def record_denied(
    request: Request,
    status_code: int,
    reason: str,
    *,
    screening_id: uuid.UUID | None = None,
    referral_id: uuid.UUID | None = None,
    partner_id: str | None = None,
) -> None:
    """Append a ``request.denied`` event in its own transaction, with the ids of what was
    refused when there is one (a revoked referral's details). Never raises: a failure to
    record is logged (the denial itself stands)."""
    principal = getattr(request.state, "principal", None)
    authenticated = isinstance(principal, Principal)
    settings: Settings = request.app.state.settings
    try:
        async with request.app.state.sessionmaker() as session:
            attach(session, settings)
            actor: Actor = (
                actor_of(principal)
                if isinstance(principal, Principal)
                else anonymous(await _issued_key_id(session, request))
            )
            await record(
                session,
                action=Action.request_denied,
                actor=actor,
                request_id=_request_id(request, authenticated),
                screening_id=screening_id,
                referral_id=referral_id,
                partner_id=partner_id,
                data={
                    "method": request.method,
                    "route": route_template(request),
                    "status_code": status_code,
                    "reason": reason,
                },
            )
            await session.commit()
    except Exception as exc:  # the denial must not turn into a 500
        log.error("audit_denial_not_recorded", error_type=type(exc).__name__)
