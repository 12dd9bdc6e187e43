"""FastAPI dependencies, as ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Principal, authenticate_key
from app.errors import Forbidden, Unauthorized
from app.models import Role
from app.settings import Settings


def get_settings_dep(request: Request) -> Settings:
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
    description="An API key (`ruta_…`) created with `ruta clients create`.",
)


async def get_principal(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("Send an API key as `Authorization: Bearer ruta_…`.")
    principal = await authenticate_key(
        session,
        secret_key=settings.secret_key.get_secret_value().encode(),
        key=credentials.credentials,
    )
    request.state.principal = principal
    return principal


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
AuditorDep = Annotated[Principal, Depends(require_roles(Role.auditor, Role.admin))]
PartnerDep = Annotated[Principal, Depends(require_roles(Role.partner))]
