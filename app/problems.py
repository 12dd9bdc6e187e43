"""Exception handlers: every error is rendered as problem+json in one place."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.audit.denials import record_denied
from app.crypto import DecryptionError
from app.errors import (
    PROBLEM_JSON,
    BadRequest,
    GenericHTTPError,
    Gone,
    MethodNotAllowed,
    NotFound,
    RutaError,
    Undecryptable,
    UnsupportedMediaType,
    ValidationFailed,
    field_error,
)
from app.i18n import negotiate

log = structlog.get_logger("ruta.errors")


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_JSON


def problem_response(error: RutaError, request: Request) -> ProblemResponse:
    locale = negotiate(request.headers.get("accept-language"))
    return ProblemResponse(
        error.problem(request.url.path, locale),
        status_code=error.status,
        headers={**error.headers, "Content-Language": locale, "Vary": "Accept-Language"},
    )


def validation_errors(errors: Any, *, strip_body: bool = True) -> list[dict[str, Any]]:
    """Pydantic errors without their ``input``: the input may be personal data."""
    out = []
    for err in errors:
        loc = tuple(err.get("loc", ()))
        if strip_body and loc[:1] == ("body",):
            loc = loc[1:]
        message = str(err.get("msg", "invalid"))
        code = str(err.get("type", "invalid"))
        if code == "extra_forbidden":
            message = "Unknown field. Check its spelling against the schema."
        elif code.endswith("_parsing"):
            # Parsing messages can quote a fragment of the input ("found `x` at 0").
            message = message.split(",")[0]
        out.append(field_error(loc, message, code))
    return out


async def _ruta_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, RutaError)
    if exc.status in (401, 403):
        # The request's own transaction is rolled back; the denial is recorded on its own.
        reason = "unauthenticated" if exc.status == 401 else "forbidden_role"
        await record_denied(request, exc.status, reason)
    elif isinstance(exc, Gone):
        await record_denied(request, exc.status, exc.refused, **exc.refs)
    return problem_response(exc, request)


async def _request_validation(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return problem_response(BadRequest("The body is not valid JSON."), request)
    if any(
        e.get("type") == "model_attributes_type" and tuple(e.get("loc", ())) == ("body",)
        for e in errors
    ):
        content_type = request.headers.get("content-type", "")
        if "json" not in content_type:
            return problem_response(
                UnsupportedMediaType("Send the body as application/json."), request
            )
    return problem_response(ValidationFailed(validation_errors(errors)), request)


async def _http_exception(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, StarletteHTTPException)
    error: RutaError
    if exc.status_code == 404:
        error = NotFound("No such route.")
    elif exc.status_code == 405:
        error = MethodNotAllowed()
    else:
        error = GenericHTTPError(exc.status_code, str(exc.detail))
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(_allowed_methods(request))
    response = problem_response(error, request)
    response.headers.update(headers)
    return response


def _allowed_methods(request: Request) -> list[str]:
    """Every method any route serves at this path (FastAPI registers one route per method,
    and Starlette's own Allow names only the first route that matched the path)."""
    path = request.url.path
    methods: set[str] = set()
    for route in request.app.routes:
        contexts = getattr(route, "effective_route_contexts", None)
        for item in list(contexts()) if callable(contexts) else [route]:
            regex = getattr(item, "path_regex", None)
            if regex is not None and regex.match(path):
                methods |= set(getattr(item, "methods", None) or ())
    return sorted(methods)


async def _undecryptable(request: Request, exc: Exception) -> ProblemResponse:
    log.error("personal_data_undecryptable", path=_route(request))
    return problem_response(
        Undecryptable(
            "A key is missing or the stored data was altered; an operator must investigate."
        ),
        request,
    )


def _route(request: Request) -> str:
    route = request.scope.get("route")
    return str(getattr(route, "path_format", None) or "unmatched")


async def _unhandled(request: Request, exc: Exception) -> ProblemResponse:
    # The exception text may quote data; log only its type.
    log.error("unhandled_error", error_type=type(exc).__name__, path=_route(request))
    return problem_response(RutaError("An internal error occurred."), request)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RutaError, _ruta_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(DecryptionError, _undecryptable)
    app.add_exception_handler(Exception, _unhandled)
