"""Console dependencies: the signed-in person, their role, and the form token."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request

from app.console import sessions
from app.console.sessions import Signed
from app.console.web import FormRefused, SignInRequired
from app.deps import SessionDep, SettingsDep, count_request
from app.errors import Forbidden
from app.models import Role
from app.models.base import utcnow


async def signed_in(request: Request, session: SessionDep, settings: SettingsDep) -> Signed:
    """The live session of this request's cookie (else to the sign-in form). The person
    counts against their client's rate limit as an API call does."""
    token = request.cookies.get(sessions.COOKIE)
    signed = await sessions.current(session, settings, token, now=utcnow()) if token else None
    if signed is None:
        # An ended session's row was removed in this transaction: keep that.
        await session.commit()
        raise SignInRequired()
    principal = signed.principal
    request.state.principal = principal
    request.state.console = signed
    await count_request(request, settings, principal)
    return signed


SignedDep = Annotated[Signed, Depends(signed_in)]


async def form_token_of(request: Request, signed: SignedDep) -> Signed:
    """Every form carries the session's token (synchroniser token): a post without it, or
    with another session's, is refused (403, audited) before anything is done."""
    if request.method != "GET":
        form = await request.form()
        given = form.get("csrf_token")
        if not sessions.same_token(signed.csrf_token, given if isinstance(given, str) else None):
            raise FormRefused()
    return signed


def console_roles(*roles: Role) -> Callable[..., Coroutine[Any, Any, Signed]]:
    allowed = frozenset(roles)

    async def dependency(signed: Annotated[Signed, Depends(form_token_of)]) -> Signed:
        if signed.principal.role not in allowed:
            raise Forbidden(
                "This page is for: {roles}.",
                params={"roles": ", ".join(sorted(r.value for r in allowed))},
            )
        return signed

    return dependency


PartnerPageDep = Annotated[Signed, Depends(console_roles(Role.partner))]
#: Coordinators are admins (docs/console.md, "Coordinators").
CoordinatorPageDep = Annotated[Signed, Depends(console_roles(Role.admin))]
AuditorPageDep = Annotated[Signed, Depends(console_roles(Role.auditor))]
ReportsPageDep = Annotated[Signed, Depends(console_roles(Role.auditor, Role.admin))]
