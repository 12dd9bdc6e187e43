"""Signing in and out, the home page, and the language switch."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, Response

from app.console import sessions
from app.console.deps import form_token_of, signed_in
from app.console.web import (
    LANG_COOKIE,
    LOCALES,
    PREFIX,
    ConsoleRoute,
    FormRefused,
    SignInRequired,
    local_path,
    redirect,
    render,
)
from app.deps import SessionDep, SettingsDep, count_failed_authentication
from app.errors import Unauthorized
from app.models import Role
from app.models.base import utcnow
from app.settings import Settings

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)

#: Where each role starts.
HOME = {
    Role.partner: f"{PREFIX}/inbox",
    Role.admin: f"{PREFIX}/queue",
    Role.auditor: f"{PREFIX}/log",
}


def _cookie(response: Response, settings: Settings, name: str, value: str, age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=age,
        path=PREFIX,
        httponly=True,
        secure=settings.console_cookie_secure,
        samesite="strict",
    )


@router.get("/sign-in")
async def sign_in_form(
    request: Request,
    settings: SettingsDep,
    next_: Annotated[str | None, Query(alias="next", max_length=300)] = None,
    failed: Annotated[bool, Query()] = False,
) -> HTMLResponse:
    token = sessions.new_token()
    response = render(
        request,
        "sign_in.html",
        {
            "form_token": token,
            "next": local_path(next_),
            "failed": failed,
            "jwt": request.app.state.jwt_verifier is not None,
        },
        status_code=401 if failed else 200,
    )
    _cookie(response, settings, sessions.SIGN_IN_COOKIE, token, 15 * 60)
    return response


@router.post("/sign-in")
async def sign_in(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    credential: Annotated[str, Form(min_length=1, max_length=8192)],
    csrf_token: Annotated[str, Form(max_length=100)] = "",
    next_: Annotated[str, Form(alias="next", max_length=300)] = PREFIX,
) -> Response:
    # Login CSRF: the form's token must equal the cookie set with the form (a cross-site
    # post carries no SameSite=Strict cookie).
    if not sessions.same_token(request.cookies.get(sessions.SIGN_IN_COOKIE), csrf_token):
        raise FormRefused()
    try:
        signed, token = await sessions.sign_in(
            session, settings, request.app.state.jwt_verifier, credential, now=utcnow()
        )
    except Unauthorized:
        # The failure is recorded; this request's transaction must keep it.
        await session.commit()
        await count_failed_authentication(request, settings)
        target = local_path(next_)
        return redirect(f"{PREFIX}/sign-in?failed=true&next={quote(target, safe='/')}")
    target = local_path(next_)
    if target == PREFIX:
        target = HOME.get(signed.principal.role, PREFIX)
    response = redirect(target)
    age = int(settings.console_session_hours * 3600)
    _cookie(response, settings, sessions.COOKIE, token, age)
    response.delete_cookie(sessions.SIGN_IN_COOKIE, path=PREFIX)
    return response


@router.post("/sign-out")
async def sign_out(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    """Anyone may call it: it ends only the caller's own session, and only with that
    session's form token (no one can be signed out by another site)."""
    try:
        signed = await form_token_of(request, await signed_in(request, session, settings))
    except SignInRequired:
        return redirect(f"{PREFIX}/sign-in")
    await sessions.sign_out(session, signed)
    response = redirect(f"{PREFIX}/sign-in")
    response.delete_cookie(sessions.COOKIE, path=PREFIX)
    return response


@router.get("")
async def home(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    """The role's start page; the sign-in form for someone not signed in."""
    try:
        signed = await signed_in(request, session, settings)
    except SignInRequired:
        return redirect(f"{PREFIX}/sign-in")
    start = HOME.get(signed.principal.role)
    if start is not None:
        return redirect(start)
    return render(request, "home.html")


@router.get("/language")
async def language(
    settings: SettingsDep,
    lang: Annotated[str, Query(pattern="^(es|en)$")],
    next_: Annotated[str | None, Query(alias="next", max_length=300)] = None,
) -> Response:
    """The language switch: a preference cookie, then back to the page."""
    assert lang in LOCALES
    response = redirect(local_path(next_))
    response.set_cookie(
        LANG_COOKIE,
        lang,
        max_age=365 * 24 * 3600,
        path=PREFIX,
        httponly=True,
        secure=settings.console_cookie_secure,
        samesite="strict",
    )
    return response
