"""ASGI middleware: no caching, the body-size cap, and the refusal of what the databases
cannot store.

Every response says ``Cache-Control: no-store``. Most of what Ruta answers is about a
person (personal fields, referral details, audit exports, and the decisions and screenings
themselves, which hold health and exploitation indicators), and a shared cache or a
browser's disk must keep none of it. One rule for every route means a new route cannot
forget it; what little is not personal (the OpenAPI document, health checks) loses nothing
by not being cached. (The framework answers an unhandled error's 500 outside all
middleware; that body holds no data.)

The cap is enforced while the body streams in, not only from Content-Length, so a chunked
upload cannot get round it.

NUL characters cannot be stored in PostgreSQL text or JSON; left alone, one in a query
parameter, a path or a JSON string fails deep in a query with a 500. They are refused up
front with a 422 naming the field.

JSON between systems is UTF-8 (RFC 8259 §8.1). Python's JSON reader also accepts UTF-16 and
UTF-32, whose text then reaches PostgreSQL with characters it refuses (a 500), so every JSON
body that is not UTF-8 is refused up front with a 415, before any parser sees it.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import (
    PROBLEM_JSON,
    PayloadTooLarge,
    RutaError,
    UnsupportedMediaType,
    ValidationFailed,
    field_error,
)
from app.i18n import negotiate

_NO_STORE = (b"cache-control", b"no-store")


class NoStore:
    """``Cache-Control: no-store`` on every HTTP response, replacing any other value."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != _NO_STORE[0]]
                message = {**message, "headers": [*headers, _NO_STORE]}
            await send(message)

        await self.app(scope, receive, send_no_store)


class _TooLarge(Exception):
    pass


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await self._reject(scope, send)
                    return
        received = 0
        too_large = False
        replaced = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            # The framework turns any error while reading the body into its own 400; once
            # the cap was hit, the answer is 413 whatever the application tried to send.
            nonlocal replaced
            if too_large:
                if not replaced and message["type"] == "http.response.start":
                    replaced = True
                    await self._reject(scope, send)
                return
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            if not replaced:
                await self._reject(scope, send)

    async def _reject(self, scope: Scope, send: Send) -> None:
        error = PayloadTooLarge(
            "The body exceeds the limit of {max_bytes} bytes.",
            params={"max_bytes": self.max_bytes},
        )
        await send_problem(scope, send, error)


#: A JSON string escape for U+0000 preceded by an even number of backslashes (an odd number
#: would make it the literal text ``\u0000``).
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_NUL_MESSAGE = "must not contain NUL characters"


class RejectNul:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        where = _nul_in_url(scope)
        if where is not None:
            await send_problem(scope, send, _nul_error(where))
            return
        if not _is_json(scope):
            await self.app(scope, receive, send)
            return
        # JSON bodies are read whole by the framework anyway; read them here first (the
        # size cap outside this middleware still applies while they stream in).
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, replay([message]), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if not _is_utf8(body):
            await send_problem(scope, send, _NOT_UTF8)
            return
        # The substring test first: the regex (a lookbehind tried at every byte) costs tens
        # of microseconds on a screening, and almost no body holds the escape at all.
        if b"\\u0000" in body and _JSON_NUL.search(body):
            found = _nul_in_json(body)
            if found is not None:
                await send_problem(scope, send, _nul_error(found))
                return
        await self.app(
            scope,
            replay([{"type": "http.request", "body": body, "more_body": False}], receive),
            send,
        )


def replay(messages: list[Message], then: Receive | None = None) -> Receive:
    """A ``receive`` that hands out ``messages`` first, then defers to ``then``."""
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive


_NOT_UTF8 = UnsupportedMediaType("Send JSON encoded as UTF-8 (RFC 8259, section 8.1).")


def _is_utf8(body: bytes) -> bool:
    """UTF-8 JSON never holds a NUL byte (U+0000 must be escaped), while UTF-16 and UTF-32
    text of ASCII characters is otherwise valid UTF-8, so the NUL test catches them."""
    if b"\x00" in body:
        return False
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            return b"json" in value.lower()
    return False


def _nul_in_url(scope: Scope) -> tuple[str, ...] | None:
    if "\x00" in scope.get("path", ""):
        return ("path",)
    query = scope.get("query_string", b"").decode("latin-1")
    if "%00" not in query and "\x00" not in query:
        return None
    for name, value in parse_qsl(query, keep_blank_values=True):
        if "\x00" in name or "\x00" in value:
            return ("query", name.replace("\x00", ""))
    return ("query",)


def _nul_in_json(body: bytes) -> tuple[str, ...] | None:
    """The path of the first string (or key) holding a NUL, or None if the body is not JSON
    (the framework then answers for it, nesting too deep for its reader included)."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return _find_nul(document)


def _find_nul(document: Any) -> tuple[str, ...] | None:
    """Depth first, in document order, without recursion (the reader accepts nesting as deep
    as Python's recursion limit)."""
    pending: list[tuple[Any, tuple[str, ...]]] = [(document, ())]
    while pending:
        value, path = pending.pop()
        if path and "\x00" in path[-1]:  # a key (list indexes never hold one)
            return (*path[:-1], path[-1].replace("\x00", ""))
        if isinstance(value, str):
            if "\x00" in value:
                return path
        elif isinstance(value, dict):
            pending.extend(reversed([(item, (*path, key)) for key, item in value.items()]))
        elif isinstance(value, list):
            pending.extend(reversed([(v, (*path, str(i))) for i, v in enumerate(value)]))
    return None


def _nul_error(loc: tuple[str, ...]) -> ValidationFailed:
    return ValidationFailed([field_error(loc, _NUL_MESSAGE, "nul_character")])


async def send_problem(scope: Scope, send: Send, error: RutaError) -> None:
    """Answer with ``error`` as problem+json, in the caller's language, and close."""
    accept_language = dict(scope.get("headers", [])).get(b"accept-language", b"")
    locale = negotiate(accept_language.decode("latin-1") or None)
    body = json.dumps(error.problem(scope.get("path"), locale)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-language", locale.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *((k.lower().encode(), v.encode()) for k, v in error.headers.items()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
