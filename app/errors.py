"""The one error tree. Every error leaves the service as RFC 9457 problem+json.

Error bodies never echo input values: a rejected screening may carry a name or a code word.
Nor names a caller chose unless they look like identifiers (see :func:`shown_name`).
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from app.i18n import DEFAULT_LOCALE, translate

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
        params: dict[str, Any] | None = None,
        **extensions: Any,
    ) -> None:
        """``detail`` is the English message id; ``params`` fill its ``{placeholders}``
        after translation. Neither may carry personal data."""
        super().__init__(detail or self.title)
        self.detail = detail
        self.params = params or {}
        self.headers = headers or {}
        self.extensions = extensions

    def problem(self, instance: str | None = None, locale: str = DEFAULT_LOCALE) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type,
            "title": translate(locale, self.title),
            "status": self.status,
        }
        if self.detail:
            body["detail"] = translate(locale, self.detail, **self.params)
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


class GenericHTTPError(RutaError):
    """An HTTP error raised by the framework itself, with its own status, and the type and
    title Ruta's own error of that status has (a body too deep to read is the framework's
    400, and is a ``/problems/bad-request`` like Ruta's)."""

    def __init__(self, status: int, detail: str | None = None) -> None:
        super().__init__(detail)
        self.status = status  # type: ignore[misc]
        known = _FRAMEWORK_STATUSES.get(status)
        if known is not None:
            self.type = known.type  # type: ignore[misc]
            self.title = known.title  # type: ignore[misc]


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


class Gone(RutaError):
    """The thing existed but may no longer be read. The refused read is audited (as
    ``request.denied`` with ``refused`` as its reason and ``refs`` as its ids) in a
    transaction of its own, since the request's is rolled back."""

    status = 410
    type = "/problems/gone"
    title = "Gone"

    def __init__(
        self,
        detail: str | None = None,
        *,
        refused: str,
        refs: dict[str, Any] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail, **extensions)
        self.refused = refused
        self.refs = refs or {}


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

    def problem(self, instance: str | None = None, locale: str = DEFAULT_LOCALE) -> dict[str, Any]:
        body = super().problem(instance, locale)
        body["errors"] = [localise_field_error(e, locale) for e in self.errors]
        return body


class TooManyRequests(RutaError):
    status = 429
    type = "/problems/rate-limited"
    title = "Too many requests"


class Undecryptable(RutaError):
    """Stored personal data failed authenticated decryption: a missing key-encryption key,
    or a ciphertext that was altered or moved to another row. Never silently ignored."""

    status = 500
    type = "/problems/undecryptable"
    title = "Personal data could not be decrypted"


class ServiceUnavailable(RutaError):
    status = 503
    type = "/problems/unavailable"
    title = "Service unavailable"


#: The errors whose type and title a framework error of the same status takes.
_FRAMEWORK_STATUSES: dict[int, type[RutaError]] = {
    c.status: c for c in (BadRequest, Forbidden, NotFound, MethodNotAllowed, PayloadTooLarge)
}


#: A name an error body may repeat: it looks like an identifier (ASCII letters, digits,
#: ``_``, ``.`` and ``-``, as in rule ids, at most 64 characters) and holds fewer than seven
#: digits (so not a phone or document number, however it is split up). Any other name a
#: caller sent (an unknown field's, a key's) may be personal data ("María Quispe", an
#: e-mail address) and is shown as :data:`WITHHELD`.
_SHOWN_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_MAX_DIGITS = 6
WITHHELD = "<withheld>"


def shown_name(name: int | str) -> str:
    """``name`` as an error body may show it: a list index or an identifier-like name as it
    is, anything else as :data:`WITHHELD`."""
    if isinstance(name, int):
        return str(name)
    if _SHOWN_NAME.fullmatch(name) and sum(c.isdigit() for c in name) <= _MAX_DIGITS:
        return name
    return WITHHELD


def field_error(loc: tuple[int | str, ...], message: str, code: str) -> dict[str, Any]:
    """One entry of a 422's ``errors``; a part of ``loc`` that does not look like an
    identifier is withheld (:func:`shown_name`)."""
    parts = [shown_name(p) for p in loc]
    return {
        "path": ".".join(parts) if parts else "",
        "pointer": "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts),
        "message": message,
        "code": code,
    }


def localise_field_error(error: dict[str, Any], locale: str) -> dict[str, Any]:
    if locale == DEFAULT_LOCALE:
        return error
    from app.i18n import translate_code

    message = str(error.get("message", ""))
    translated = translate(locale, message.removeprefix("Value error, "))
    if translated == message.removeprefix("Value error, "):
        translated = translate_code(locale, str(error.get("code", "")), message)
    return {**error, "message": translated}
