"""What every console page shares: templates, the language, times, and error pages.

The console is server-rendered HTML (Jinja2): no JavaScript is needed to use it, and every
asset is served by Ruta (``/console/static``), so it works on an intranet with no access to
a CDN. Pages carry a strict Content-Security-Policy (same-origin scripts, styles and images
only) and are never cached (the NoStore middleware).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape

from app.audit.denials import record_denied
from app.errors import Forbidden, Gone, NotFound, RutaError, TooManyRequests
from app.i18n import negotiate, translate
from app.settings import Settings

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
PREFIX = "/console"
LOCALES = ("es", "en")
#: The language switch's cookie (a preference, not a secret).
LANG_COOKIE = "ruta_lang"
#: Same-origin everything; no inline script; forms post only to Ruta.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

ENVIRONMENT = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


class SignInRequired(Exception):
    """No live console session: the page answers with a redirect to the sign-in form."""


def locale_of(request: Request) -> str:
    """The switch's choice, else the browser's ``Accept-Language``, else Spanish."""
    chosen = request.cookies.get(LANG_COOKIE)
    if chosen in LOCALES:
        return chosen
    return negotiate(request.headers.get("accept-language"), "es")


def local_path(target: str | None) -> str:
    """``target`` if it is a console path (where to return after sign-in or a language
    switch), else the console's home: never a redirect off the site."""
    if (
        target
        and target.startswith(PREFIX)
        and not target.startswith("//")
        and "\\" not in target
        and all(ch.isprintable() and not ch.isspace() for ch in target)
    ):
        return target
    return PREFIX


class Page:
    """What a template is rendered with: translation, times in the console's zone."""

    def __init__(self, request: Request, settings: Settings) -> None:
        self.request = request
        self.locale = locale_of(request)
        self.zone = ZoneInfo(settings.console_timezone)
        self.path = request.url.path + (f"?{request.url.query}" if request.url.query else "")

    def t(self, text: str, **params: Any) -> str:
        return translate(self.locale, text, **params)

    def code(self, value: str | None) -> str:
        """A code (a status, a reason) as words: translated, or the code itself."""
        if value is None:
            return ""
        return translate(self.locale, f"code:{value}") if _known(self.locale, value) else value

    def when(self, moment: datetime | None) -> str:
        if moment is None:
            return ""
        return moment.astimezone(self.zone).strftime("%Y-%m-%d %H:%M")

    def iso(self, moment: datetime | None) -> str:
        return moment.isoformat() if moment is not None else ""

    def span(self, delta: timedelta) -> str:
        """A duration as "2 d 3 h", "3 h 20 min" or "12 min"."""
        minutes = int(abs(delta).total_seconds() // 60)
        days, rest = divmod(minutes, 24 * 60)
        hours, minutes = divmod(rest, 60)
        if days:
            return f"{days} d {hours} h"
        if hours:
            return f"{hours} h {minutes} min"
        return f"{minutes} min"

    def seconds(self, value: float) -> str:
        return self.span(timedelta(seconds=value))

    def quote(self, value: str) -> str:
        return quote(value, safe="")


def _known(locale: str, code: str) -> bool:
    from app.i18n import catalogue

    return f"code:{code}" in catalogue(locale).get("messages", {}) or f"code:{code}" in (
        catalogue("en").get("messages", {})
    )


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
) -> HTMLResponse:
    settings: Settings = request.app.state.settings
    page = Page(request, settings)
    signed = getattr(request.state, "console", None)
    body = ENVIRONMENT.get_template(template).render(
        page=page, t=page.t, signed=signed, **(context or {})
    )
    response = HTMLResponse(body, status_code=status_code)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Content-Language"] = page.locale
    response.headers["Vary"] = "Accept-Language, Cookie"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def redirect(target: str) -> RedirectResponse:
    """After a form: back to a page (303, so the browser follows with GET)."""
    return RedirectResponse(target, status_code=303)


async def error_page(request: Request, exc: RutaError) -> HTMLResponse:
    """A Ruta error as a console page, recorded like the API's (403, 401, 410)."""
    if exc.status in (401, 403):
        reason = "unauthenticated" if exc.status == 401 else "forbidden_role"
        await record_denied(request, exc.status, getattr(exc, "denial", reason))
    elif isinstance(exc, Gone):
        await record_denied(request, exc.status, exc.refused, **exc.refs)
    locale = locale_of(request)
    response = render(
        request,
        "error.html",
        {
            "status": exc.status,
            "title": translate(locale, exc.title),
            "detail": translate(locale, exc.detail, **exc.params) if exc.detail else "",
            "extensions": {k: v for k, v in exc.extensions.items() if isinstance(v, str)},
        },
        status_code=exc.status,
    )
    if isinstance(exc, TooManyRequests):
        response.headers.update(exc.headers)
    return response


class ConsoleRoute(APIRoute):
    """A console route: Ruta's errors become console pages, and a request with no live
    session is sent to the sign-in form (then back to the page it asked for)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def console_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired:
                back = request.url.path if request.method == "GET" else PREFIX
                return redirect(f"{PREFIX}/sign-in?next={quote(back, safe='/')}")
            except RequestValidationError:
                # A malformed id in the path is a page that does not exist; a malformed
                # form is refused as one (fields are never echoed).
                error: RutaError = NotFound("No such page.")
                if request.method != "GET":
                    error = BadRequestPage()
                raise ConsoleError(error) from None
            except RutaError as exc:
                raise ConsoleError(exc) from exc

        return console_handler


class ConsoleError(Exception):
    """A Ruta error on a console page. Rendered by :func:`console_error` once the request's
    own transaction has ended (a denial is recorded in a transaction of its own, which on
    SQLite must not wait for the request's)."""

    def __init__(self, error: RutaError) -> None:
        super().__init__(error.title)
        self.error = error


async def console_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ConsoleError)
    return await error_page(request, exc.error)


class FormRefused(Forbidden):
    """A form without this session's token (a forged or stale post)."""

    denial = "csrf_failed"

    def __init__(self) -> None:
        super().__init__("The form has expired or did not come from this console.")


class BadRequestPage(RutaError):
    status = 400
    type = "/problems/bad-request"
    title = "Bad request"

    def __init__(self) -> None:
        super().__init__("The form is not valid. Go back and try again.")
