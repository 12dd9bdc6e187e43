"""FastAPI dependencies, as ``Annotated`` aliases."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.denials import route_template
from app.auth import KEY_PREFIX, JwtVerifier, Principal, authenticate_key
from app.errors import Forbidden, Unauthorized
from app.models import Role
from app.ratelimit import RateLimiter, enforce
from app.settings import Settings


async def get_settings_dep(request: Request) -> Settings:
    """``async`` on purpose, as every dependency here: FastAPI runs a plain ``def``
    dependency in its thread pool, a thread hop on every request."""
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One request, one transaction: commit when the route returns, roll back on error.

    ``scope="function"`` (below) makes the commit happen before the response is sent, so a
    client never sees 201 for a screening whose commit failed.
    """
    async with request.app.state.sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]

bearer = HTTPBearer(
    auto_error=False,
    description="An API key (`ruta_…`) created with `ruta clients create`, or a JWT "
    "from the configured identity provider.",
)


async def _authenticate(
    request: Request,
    session: AsyncSession,
    settings: Settings,
    credentials: HTTPAuthorizationCredentials | None,
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("Send an API key as `Authorization: Bearer ruta_…`.")
    token = credentials.credentials
    verifier: JwtVerifier | None = request.app.state.jwt_verifier
    if token.startswith(KEY_PREFIX) or verifier is None:
        # What the audit trail records if a rotated-out key is used: the route template and
        # the request id (RequestContext keeps only ids the trail accepts).
        request_id = getattr(request.state, "request_id", None)
        return await authenticate_key(
            session,
            secret_key=settings.secret_key.get_secret_value().encode(),
            key=token,
            method=request.method,
            route=route_template(request),
            request_id=request_id if isinstance(request_id, str) else None,
            cache_seconds=settings.auth_cache_seconds,
        )
    return verifier.verify(token)


def _source_key(request: Request, settings: Settings) -> str:
    """A keyed hash of the caller's address: the address itself is never stored."""
    host = request.client.host if request.client else "unknown"
    digest = hmac.new(settings.secret_key.get_secret_value().encode(), host.encode(), "sha256")
    return "anon:" + digest.hexdigest()[:24]


async def get_principal(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    try:
        principal = await _authenticate(request, session, settings, credentials)
    except Unauthorized:
        await count_failed_authentication(request, settings)
        raise
    await count_request(request, settings, principal)
    request.state.principal = principal
    return principal


async def count_failed_authentication(request: Request, settings: Settings) -> None:
    """Count a failed authentication against its source address (slows key guessing; 429
    past the limit): API calls and console sign-ins alike."""
    limiter: RateLimiter = request.app.state.rate_limiter
    enforce(
        await limiter.hit(
            _source_key(request, settings),
            settings.rate_limit_unauthenticated,
            settings.rate_limit_window_seconds,
        )
    )


async def count_request(request: Request, settings: Settings, principal: Principal) -> None:
    """Count a request against its client's rate limit (429 past it): API calls and the
    console's pages alike."""
    limiter: RateLimiter = request.app.state.rate_limiter
    limit = {
        Role.clinic: settings.rate_limit_clinic,
        Role.partner: settings.rate_limit_partner,
        Role.auditor: settings.rate_limit_auditor,
        Role.admin: settings.rate_limit_admin,
    }[principal.role]
    key = f"client:{principal.client_id}"
    enforce(await limiter.hit(key, limit, settings.rate_limit_window_seconds))


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require_roles(*roles: Role) -> Callable[..., Coroutine[Any, Any, Principal]]:
    allowed = frozenset(roles)

    async def dependency(principal: PrincipalDep) -> Principal:
        if principal.role not in allowed:
            raise Forbidden(
                "This route is for: {roles}.",
                params={"roles": ", ".join(sorted(r.value for r in allowed))},
            )
        return principal

    return dependency


ClinicDep = Annotated[Principal, Depends(require_roles(Role.clinic))]
ClinicOrAdminDep = Annotated[Principal, Depends(require_roles(Role.clinic, Role.admin))]
AdminDep = Annotated[Principal, Depends(require_roles(Role.admin))]
AuditorDep = Annotated[Principal, Depends(require_roles(Role.auditor))]
PartnerDep = Annotated[Principal, Depends(require_roles(Role.partner))]
