"""The one error tree. Every error leaves the service as RFC 9457 problem+json.

Error bodies never echo input values: a rejected screening may carry a name or a code word.
"""

from __future__ import annotations

from typing import Any, ClassVar

PROBLEM_JSON = "application/problem+json"


class RutaError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "/problems/internal"
    title: ClassVar[str] = "Internal error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.headers = headers or {}
        self.extensions = extensions

    def problem(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type, "title": self.title, "status": self.status}
        if self.detail:
            body["detail"] = self.detail
        if instance:
            body["instance"] = instance
        body.update(self.extensions)
        return body


class BadRequest(RutaError):
    status = 400
    type = "/problems/bad-request"
    title = "Bad request"


class Unauthorized(RutaError):
    status = 401
    type = "/problems/unauthorized"
    title = "Authentication required"

    def __init__(self, detail: str | None = None, **extensions: Any) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"}, **extensions)


class Forbidden(RutaError):
    status = 403
    type = "/problems/forbidden"
    title = "Not allowed for this role"


class NotFound(RutaError):
    status = 404
    type = "/problems/not-found"
    title = "Not found"


class MethodNotAllowed(RutaError):
    status = 405
    type = "/problems/method-not-allowed"
    title = "Method not allowed"


class Conflict(RutaError):
    status = 409
    type = "/problems/conflict"
    title = "Conflict"


class PayloadTooLarge(RutaError):
    status = 413
    type = "/problems/payload-too-large"
    title = "Request body too large"


class UnsupportedMediaType(RutaError):
    status = 415
    type = "/problems/unsupported-media-type"
    title = "Unsupported media type"


class ValidationFailed(RutaError):
    """422 with one entry per invalid field: ``path`` (dotted), ``pointer`` (RFC 6901)."""

    status = 422
    type = "/problems/validation"
    title = "The request is not valid"

    def __init__(self, errors: list[dict[str, Any]], detail: str | None = None) -> None:
        super().__init__(detail or "See `errors` for each invalid field.", errors=errors)
        self.errors = errors


class TooManyRequests(RutaError):
    status = 429
    type = "/problems/rate-limited"
    title = "Too many requests"


class ServiceUnavailable(RutaError):
    status = 503
    type = "/problems/unavailable"
    title = "Service unavailable"


def field_error(loc: tuple[int | str, ...], message: str, code: str) -> dict[str, Any]:
    parts = [str(p) for p in loc]
    return {
        "path": ".".join(parts) if parts else "",
        "pointer": "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts),
        "message": message,
        "code": code,
    }
