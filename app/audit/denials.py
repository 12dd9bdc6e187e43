"""Recording denied requests (401/403, and 410 for data that may no longer be read).

The request's own transaction is rolled back when it fails, so a denial is recorded in a
transaction of its own. What is kept: the route template (never the concrete path, which may
hold ids), the method, the status, the caller if known (client id and role) or the key id of
a well-formed key; never the key, the body or the query.
"""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from fastapi import Request

from app.audit.vocabulary import REF_RE, ROUTE_RE, Action
from app.audit.writer import Actor, actor_of, anonymous, attach, record
from app.auth import Principal, parse_key_id
from app.settings import Settings

log = structlog.get_logger("ruta.audit")


def route_template(request: Request) -> str | None:
    route: Any = request.scope.get("route")
    # The template as declared ("/v1/screenings/{screening_id}"), not with its converters.
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return path if isinstance(path, str) and ROUTE_RE.fullmatch(path) else None


def _presented_key_id(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return parse_key_id(credentials.strip())


def _request_id(request: Request) -> str | None:
    # The id the request-context middleware accepted or generated, else the raw header.
    value = getattr(request.state, "request_id", None) or request.headers.get("x-request-id")
    return value if value and REF_RE.fullmatch(value) and not value.isdigit() else None


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
    actor: Actor = (
        actor_of(principal)
        if isinstance(principal, Principal)
        else anonymous(_presented_key_id(request))
    )
    settings: Settings = request.app.state.settings
    try:
        async with request.app.state.sessionmaker() as session:
            attach(session, settings)
            await record(
                session,
                action=Action.request_denied,
                actor=actor,
                request_id=_request_id(request),
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
