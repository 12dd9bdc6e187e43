"""Compression on the wire, both ways (issue 19: clinics on links of about 50 kbit/s).

**Responses** are compressed by ``starlette-compress`` (:func:`response_compression`) when
the client's ``Accept-Encoding`` allows it: zstd, then Brotli, then gzip, in that order of
preference whatever the q-values say (a coding with ``q=0`` is never used); identity
otherwise. Bodies under :data:`MINIMUM_SIZE` bytes go as they are (a problem+json or a small
receipt gains nothing). Multi-part (streamed) bodies such as the audit export are
compressed as they stream, never buffered whole. Only Ruta's API media types are compressed
(:data:`COMPRESSED_TYPES`): the console's HTML pages carry CSRF tokens beside text an
attacker may influence, which is what BREACH-style attacks on compressed size need, so
``text/html`` is never compressed.

**Requests** with ``Content-Encoding: gzip`` are decoded here (:class:`RequestDecoding`), for
every route, before anything else reads the body; what the routes, the NUL check and any
signature verification see are the decoded bytes, and the headers then say
``Content-Length`` of the decoded body and no ``Content-Encoding``. The body-size cap
(``RUTA_MAX_BODY_BYTES``) holds for the decoded size: the gzip stream is inflated a bounded
piece at a time (``zlib.decompressobj`` with ``max_length``), so a compression bomb is
refused with 413 after at most the cap plus one byte was inflated, never more. The cap also
still holds for the compressed bytes on the wire (``BodySizeLimit`` sits outside).
A body that is not valid gzip is a 400; any other coding (``br``, ``compress``, ``deflate``,
``zstd``...) is a 415 naming it, with ``Accept-Encoding: gzip`` saying what is accepted
(RFC 9110, section 15.5.16). gzip only: every HTTP client can write it, and a clinic app's
request is small once compressed (a 100-screening batch is about 5 KB), so another coding
would add a decoder to guard without saving anything that matters.
"""

from __future__ import annotations

import zlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette_compress import CompressMiddleware, add_compress_type, remove_compress_type

from app.errors import (
    BadRequest,
    PayloadTooLarge,
    RutaError,
    UnsupportedMediaType,
    shown_name,
)
from app.middleware import replay, send_problem

#: Responses smaller than this go uncompressed: below about half a kilobyte the codings'
#: headers and the CPU cost more than the bytes saved.
MINIMUM_SIZE = 500

#: Ruta's API media types, compressed when the client accepts it.
COMPRESSED_TYPES = (
    "application/json",
    "application/problem+json",
    "application/fhir+json",
    "application/x-ndjson",
    "text/csv",
)
#: Never compressed: pages that hold a secret (the console's CSRF token) beside text an
#: attacker may choose.
UNCOMPRESSED_TYPES = ("text/html", "application/xhtml+xml")

#: Levels, measured on the answer to a batch of 100 (1.96 MB) and on one receipt (19.4 KB)
#: (docs/performance.md, "On the wire"): gzip 6 makes the batch 38.7 KB where the library's
#: default 4 makes 76.9 KB, for 0.5 ms more; Brotli 5 is 8 % smaller than 4 for the same
#: CPU; zstd 6 is 4-7 % smaller than 4 and still the cheapest (1.8 ms for the batch, gzip 7.9).
GZIP_LEVEL = 6
BROTLI_QUALITY = 5
ZSTD_LEVEL = 6

#: gzip container only (RFC 1952), not raw deflate or zlib.
_GZIP_WBITS = 16 + zlib.MAX_WBITS
#: The most inflated at one step.
_STEP = 64 * 1024
_ACCEPTED_CODINGS = {"gzip", "x-gzip"}


def response_compression(app: ASGIApp) -> ASGIApp:
    """``app`` answering compressed where the client accepts it (see the module docstring).

    The middleware adds ``Vary: Accept-Encoding`` and, on a compressed body, sets
    ``Content-Encoding`` and the compressed ``Content-Length``; other headers (``Cache-Control:
    no-store``, ``Location``, ``Preference-Applied``) pass untouched. Ruta sends no ETags,
    so none needs weakening."""
    for media_type in COMPRESSED_TYPES:
        add_compress_type(media_type)
    for media_type in UNCOMPRESSED_TYPES:
        remove_compress_type(media_type)
    return CompressMiddleware(
        app,
        minimum_size=MINIMUM_SIZE,
        gzip_level=GZIP_LEVEL,
        brotli_quality=BROTLI_QUALITY,
        zstd_level=ZSTD_LEVEL,
    )


class GzipInflater:
    """A gzip body inflated piece by piece, refusing it once it passes ``max_bytes``.

    ``inflated`` counts every byte ever produced: it never exceeds ``max_bytes + 1``.
    Concatenated gzip members (RFC 1952, section 2.2) are read one after the other."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.inflated = 0
        self._seen_input = False
        self._decoder = zlib.decompressobj(_GZIP_WBITS)

    def feed(self, data: bytes) -> list[bytes]:
        pieces: list[bytes] = []
        try:
            while data:
                self._seen_input = True
                if self._decoder.eof:  # the next member
                    self._decoder = zlib.decompressobj(_GZIP_WBITS)
                room = min(_STEP, self.max_bytes + 1 - self.inflated)
                piece = self._decoder.decompress(data, room)
                self.inflated += len(piece)
                if self.inflated > self.max_bytes:
                    raise _too_large(self.max_bytes)
                pieces.append(piece)
                data = (
                    self._decoder.unused_data
                    if self._decoder.eof
                    else self._decoder.unconsumed_tail
                )
        except zlib.error:
            raise _corrupt() from None
        return pieces

    def finish(self) -> None:
        """The body ended: a gzip stream cut short is as corrupt as a wrong one."""
        if self._seen_input and not self._decoder.eof:
            raise _corrupt()


def _corrupt() -> BadRequest:
    return BadRequest("The body is not valid gzip (Content-Encoding: gzip).")


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        "The body exceeds the limit of {max_bytes} bytes.", params={"max_bytes": max_bytes}
    )


def content_codings(scope: Scope) -> list[str] | None:
    """The request's content codings other than identity, in the order applied; None
    without a ``Content-Encoding`` header (the common case: one pass over the headers)."""
    found: list[str] | None = None
    for name, value in scope.get("headers", []):
        if name == b"content-encoding":
            found = found or []
            for coding in value.decode("latin-1").split(","):
                coding = coding.strip().lower()
                if coding and coding != "identity":
                    found.append(coding)
    return found


class RequestDecoding:
    """Decode ``Content-Encoding: gzip`` request bodies for every route (module docstring)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        codings = content_codings(scope)
        if codings is None:
            await self.app(scope, receive, send)
            return
        if codings and not (len(codings) == 1 and codings[0] in _ACCEPTED_CODINGS):
            await send_problem(scope, send, _unsupported(codings))
            return
        inflater = GzipInflater(self.max_bytes) if codings else None
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, replay([message]), send)
                return
            data = message.get("body", b"")
            try:
                chunks.extend(inflater.feed(data) if inflater is not None else [data])
                if not message.get("more_body", False):
                    if inflater is not None:
                        inflater.finish()
                    break
            except RutaError as error:
                await send_problem(scope, send, error)
                return
        body = b"".join(chunks)
        await self.app(_decoded(scope, len(body)), _one_message(body, receive), send)


def _unsupported(codings: list[str]) -> UnsupportedMediaType:
    # The codings are named back (the header is the caller's own text, so only as
    # identifier-like tokens; anything else is withheld).
    shown = ", ".join(shown_name(coding) for coding in codings)
    return UnsupportedMediaType(
        "Content-Encoding {coding} is not supported: send gzip, or no Content-Encoding.",
        params={"coding": shown},
        headers={"Accept-Encoding": "gzip"},
        content_encoding=shown,
    )


def _decoded(scope: Scope, length: int) -> Scope:
    """The scope as if the decoded body had been sent as it is."""
    headers = [
        (name, value)
        for name, value in scope["headers"]
        if name not in (b"content-encoding", b"content-length")
    ]
    headers.append((b"content-length", str(length).encode()))
    return {**scope, "headers": headers}


def _one_message(body: bytes, then: Receive) -> Receive:
    message: Message = {"type": "http.request", "body": body, "more_body": False}
    return replay([message], then)
