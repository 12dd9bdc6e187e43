"""Compression on the wire (app/compression.py): gzip request bodies decoded with the size
cap on the decoded size, other codings refused, and answers compressed as the client's
Accept-Encoding allows."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app import compression
from app.compression import GzipInflater, content_codings
from app.errors import PayloadTooLarge
from app.settings import Settings
from tests.conftest import KeyFactory, bearer
from tests.factories import screening

ORG = "Caravana de la Vida"
GZIP_JSON = {"Content-Type": "application/json", "Content-Encoding": "gzip"}


async def test_a_gzip_body_is_decoded_and_stored(
    http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    key = await api_key("clinic", ORG)
    body = screening()
    sent = gzip.compress(json.dumps(body).encode())
    response = await http.post("/v1/screenings", content=sent, headers={**bearer(key), **GZIP_JSON})
    assert response.status_code == 201, response.text
    stored = await http.get(f"/v1/screenings/{body['id']}", headers=bearer(key))
    assert stored.status_code == 200
    assert stored.json()["screening"]["subject"]["age"] == body["subject"]["age"]
    # The same screening sent again uncompressed is the same body: a replay, not a conflict.
    again = await http.post("/v1/screenings", json=body, headers=bearer(key))
    assert again.status_code == 200
    assert again.json()["replayed"] is True


async def test_a_batch_may_be_sent_gzipped_in_several_members_and_chunks(
    http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    key = await api_key("clinic", ORG)
    raw = json.dumps({"screenings": [screening(), screening()]}).encode()
    half = len(raw) // 2
    # Two gzip members one after the other (RFC 1952, 2.2), streamed in small pieces.
    sent = gzip.compress(raw[:half]) + gzip.compress(raw[half:])

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(sent), 100):
            yield sent[start : start + 100]

    response = await http.post(
        "/v1/screenings/batch", content=pieces(), headers={**bearer(key), **GZIP_JSON}
    )
    assert response.status_code == 200, response.text
    assert response.json()["created"] == 2


def _bomb(total: int, counter: dict[str, int]) -> AsyncIterator[bytes]:
    """``total`` zero bytes gzipped, compressed only as the server reads it."""

    async def chunks() -> AsyncIterator[bytes]:
        encoder = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        block = bytes(1024 * 1024)
        for _ in range(total // len(block)):
            counter["zeros"] += len(block)
            out = encoder.compress(block)
            if out:
                counter["sent"] += len(out)
                yield out
        yield encoder.flush()

    return chunks()


async def test_a_compression_bomb_is_refused_after_inflating_at_most_the_cap(
    http: httpx.AsyncClient, api_key: KeyFactory, settings: Settings, monkeypatch: Any
) -> None:
    inflaters: list[GzipInflater] = []

    class Watched(GzipInflater):
        def __init__(self, max_bytes: int) -> None:
            super().__init__(max_bytes)
            inflaters.append(self)

    monkeypatch.setattr(compression, "GzipInflater", Watched)
    key = await api_key("clinic", ORG)
    counter = {"zeros": 0, "sent": 0}
    gigabyte = 1024**3
    response = await http.post(
        "/v1/screenings/batch",
        content=_bomb(gigabyte, counter),
        headers={**bearer(key), **GZIP_JSON},
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "/problems/payload-too-large"
    [inflater] = inflaters
    cap = settings.max_body_bytes
    assert cap < inflater.inflated <= cap + 1
    # The client was read only until then: a few MB of its gigabyte were ever compressed.
    assert counter["zeros"] <= 4 * cap


async def test_the_cap_holds_for_the_decoded_size_not_the_compressed_one() -> None:
    inflater = GzipInflater(max_bytes=1000)
    sent = gzip.compress(b"x" * 1001)
    assert len(sent) < 100

    def feed_in_pieces() -> None:
        for start in range(0, len(sent), 7):
            inflater.feed(sent[start : start + 7])

    with pytest.raises(PayloadTooLarge):
        feed_in_pieces()
    assert inflater.inflated == 1001
    exact = GzipInflater(max_bytes=1000)
    assert b"".join(exact.feed(gzip.compress(b"x" * 1000))) == b"x" * 1000
    exact.finish()


@pytest.mark.parametrize(
    "body",
    [
        b"\x1f\x8b\x08\x00not really gzip at all",
        b"{}",
        gzip.compress(b'{"screenings": []}')[:-6],  # cut short
        gzip.compress(b"{}") + b"trailing garbage",
    ],
    ids=["bad-header", "plain-json", "truncated", "trailing-garbage"],
)
async def test_a_body_that_is_not_gzip_is_a_400(
    http: httpx.AsyncClient, api_key: KeyFactory, body: bytes
) -> None:
    key = await api_key("clinic", ORG)
    response = await http.post(
        "/v1/screenings/batch",
        content=body,
        headers={**bearer(key), **GZIP_JSON, "Accept-Language": "es"},
    )
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "/problems/bad-request"
    assert "gzip" in problem["detail"]
    assert "válido" in problem["detail"]  # in the caller's language


@pytest.mark.parametrize("coding", ["br", "compress", "deflate", "zstd", "gzip, gzip"])
async def test_another_content_coding_is_a_415_naming_it(
    http: httpx.AsyncClient, api_key: KeyFactory, coding: str
) -> None:
    key = await api_key("clinic", ORG)
    response = await http.post(
        "/v1/screenings",
        content=b"{}",
        headers={**bearer(key), "Content-Type": "application/json", "Content-Encoding": coding},
    )
    assert response.status_code == 415
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["accept-encoding"] == "gzip"
    problem = response.json()
    assert problem["content_encoding"] == coding
    assert coding in problem["detail"]


async def test_identity_is_no_coding(http: httpx.AsyncClient, api_key: KeyFactory) -> None:
    key = await api_key("clinic", ORG)
    response = await http.post(
        "/v1/screenings",
        json=screening(),
        headers={**bearer(key), "Content-Encoding": "identity"},
    )
    assert response.status_code == 201, response.text


def test_content_codings_are_read_in_order_without_identity() -> None:
    def scope(*values: bytes) -> dict[str, Any]:
        return {"headers": [(b"content-encoding", v) for v in values]}

    assert content_codings({"headers": [(b"content-type", b"application/json")]}) is None
    assert content_codings(scope(b"identity")) == []
    assert content_codings(scope(b" GZip ")) == ["gzip"]
    assert content_codings(scope(b"gzip, br")) == ["gzip", "br"]
    assert content_codings(scope(b"gzip", b"identity")) == ["gzip"]


async def test_a_coding_that_is_not_a_token_is_withheld(
    http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    key = await api_key("clinic", ORG)
    response = await http.post(
        "/v1/screenings",
        content=b"{}",
        headers={**bearer(key), "Content-Type": "application/json", "Content-Encoding": "a b/c"},
    )
    assert response.status_code == 415
    assert "a b/c" not in response.text


# --- Answers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "coding"),
    [
        ("gzip", "gzip"),
        ("br", "br"),
        ("zstd", "zstd"),
        ("gzip, br, zstd", "zstd"),
        ("gzip;q=1.0, br;q=0.5", "br"),  # the server's order, among the acceptable ones
        ("gzip, br;q=0, zstd;q=0", "gzip"),
        ("*", "zstd"),
        ("*, zstd;q=0, br;q=0", "gzip"),
        ("gzip;q=0", None),
        ("identity", None),
        ("compress", None),
        (None, None),
    ],
)
async def test_answers_are_compressed_as_accept_encoding_allows(
    app: FastAPI, accept: str | None, coding: str | None
) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ruta.test") as client:
        # httpx would otherwise send its own Accept-Encoding.
        client.headers.pop("accept-encoding")
        headers = {"Accept-Encoding": accept} if accept is not None else {}
        response = await client.get("/openapi.json", headers=headers)
    assert response.status_code == 200
    assert response.headers.get("content-encoding") == coding
    assert response.headers["cache-control"] == "no-store"
    assert "accept-encoding" in response.headers["vary"].lower()
    assert response.json()["openapi"].startswith("3.")
    if coding is not None:
        assert response.num_bytes_downloaded < len(response.content) / 3
        assert int(response.headers["content-length"]) == response.num_bytes_downloaded


async def test_small_answers_and_html_go_uncompressed(http: httpx.AsyncClient) -> None:
    health = await http.get("/healthz", headers={"Accept-Encoding": "gzip"})
    assert health.status_code == 200
    assert "content-encoding" not in health.headers
    problem = await http.get("/v1/nowhere", headers={"Accept-Encoding": "gzip"})
    assert problem.status_code == 404
    assert "content-encoding" not in problem.headers
    # Console pages carry a CSRF token: never compressed (BREACH).
    page = await http.get("/console/sign-in", headers={"Accept-Encoding": "gzip, br, zstd"})
    assert page.headers["content-type"].startswith("text/html"), page.status_code
    assert "content-encoding" not in page.headers


async def test_a_large_receipt_is_compressed_with_its_headers_kept(
    http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    key = await api_key("clinic", ORG)
    body = screening()
    response = await http.post(
        "/v1/screenings", json=body, headers={**bearer(key), "Accept-Encoding": "gzip"}
    )
    assert response.status_code == 201
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["location"] == f"/v1/screenings/{body['id']}"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-request-id"]
    assert response.json()["id"] == body["id"]


async def test_the_audit_export_streams_compressed(
    http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    auditor = bearer(await api_key("auditor", name="dpo"))
    plain = await http.get("/v1/audit/export", headers={**auditor, "Accept-Encoding": "identity"})
    assert plain.status_code == 200, plain.text
    async with http.stream(
        "GET", "/v1/audit/export", headers={**auditor, "Accept-Encoding": "gzip"}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-encoding"] == "gzip"
        assert "content-length" not in response.headers
        raw = b"".join([chunk async for chunk in response.aiter_raw()])
    lines = [json.loads(line) for line in gzip.decompress(raw).decode().splitlines()]
    # The first export is itself audited: the second holds one more event.
    assert len(lines) == len(plain.text.splitlines()) + 1
    assert lines[0]["type"] == "header"
    assert {line["type"] for line in lines} == {"header", "event", "checkpoint"}
