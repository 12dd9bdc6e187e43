"""Bytes on the wire for a clinic on a slow link (issue 19): compression and minimal receipts.

    python -m bench.wire [--batch 100]

Runs the real app in-process (production settings, SQLite, the benchmark partner directory,
worker off) under an httpx client and posts screenings like docs/examples/screening.json:
one at a time, and as a batch of ``--batch``. For each it prints the request body as sent
(raw, gzip) and the response body as it arrived (``num_bytes_downloaded``: after the
server's compression) for each ``Accept-Encoding`` (identity, gzip, br, zstd), for the full
receipt and for ``Prefer: return=minimal``, then PASS or FAIL against each target:

* a batch of 100, gzipped, asking for minimal receipts, gzip accepted: at most 40 KB on the
  wire each way;
* one minimal receipt, gzip accepted: at most 1.5 KB on the wire (its uncompressed size
  is printed too).

Bodies only: HTTP headers add about 300 bytes to each request and answer. Exits 1 when a
target is missed.

Last, what the two middlewares (app/compression.py) cost per request, in CPU: a fixed
full receipt answered by a bare ASGI app, called directly, then through both middlewares
without ``Accept-Encoding`` (the path wrk and most of the intake bench take), and with each
coding accepted (and the request body gzipped).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import gzip
import json
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import intake as wrk_bench
from bench.directory import write_directory

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE: dict[str, Any] = json.loads((ROOT / "docs" / "examples" / "screening.json").read_text())
ENCODINGS = ("identity", "gzip", "br", "zstd")
KB = 1000

#: (what, limit in bytes)
BATCH_TARGET = 40 * KB
MINIMAL_TARGET = 1500


@dataclass
class Sizes:
    request_raw: int
    request_gzip: int
    #: (receipt kind, Accept-Encoding) -> response body bytes as they arrived
    response: dict[tuple[str, str], int]


def screening() -> dict[str, Any]:
    document = copy.deepcopy(EXAMPLE)
    document["id"] = str(uuid.uuid4())
    document["subject"]["case_code"] = "WIRE-" + uuid.uuid4().hex[:6]
    return document


def body_for(batch: int) -> bytes:
    if batch == 0:
        return json.dumps(screening()).encode()
    return json.dumps({"screenings": [screening() for _ in range(batch)]}).encode()


async def post(
    client: httpx.AsyncClient, key: str, batch: int, *, minimal: bool, accept: str
) -> tuple[int, int, int]:
    """Post a fresh screening (or batch) gzipped; (request raw, request gzip, response
    bytes as they arrived)."""
    raw = body_for(batch)
    sent = gzip.compress(raw, 6)
    headers = {
        "Authorization": f"Bearer {key}",
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
        "Accept-Encoding": accept,
        "Accept-Language": "es",
    }
    if minimal:
        headers["Prefer"] = "return=minimal"
    path = "/v1/screenings/batch" if batch else "/v1/screenings"
    async with client.stream("POST", path, content=sent, headers=headers) as response:
        await response.aread()
        if response.status_code not in (200, 201):
            raise RuntimeError(f"{response.status_code}: {response.text[:500]}")
        if batch and response.json()["failed"]:
            raise RuntimeError(f"batch items failed: {response.text[:500]}")
        coding = response.headers.get("content-encoding", "identity")
        if coding != accept and len(response.content) >= 500:
            raise RuntimeError(f"asked for {accept}, got {coding}")
        return len(raw), len(sent), response.num_bytes_downloaded


async def measure(env: dict[str, str], key: str, batch: int) -> dict[str, Sizes]:
    os.environ.update(env)
    from app.main import create_app
    from app.settings import Settings

    app = create_app(Settings())
    found: dict[str, Sizes] = {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for name, size in (("single", 0), (f"batch of {batch}", batch)):
                response: dict[tuple[str, str], int] = {}
                raw = sent = 0
                for kind in ("full", "minimal"):
                    for accept in ENCODINGS:
                        raw, sent, got = await post(
                            client, key, size, minimal=kind == "minimal", accept=accept
                        )
                        response[kind, accept] = got
                found[name] = Sizes(raw, sent, response)
    return found


def report(found: dict[str, Sizes], batch: int) -> bool:
    print("bytes on the wire (bodies), Accept-Language: es")
    header = "".join(f"{e:>10}" for e in ENCODINGS)
    ok = True
    for name, sizes in found.items():
        print(f"\n{name}: request {sizes.request_raw:,} raw, {sizes.request_gzip:,} gzip")
        print(f"  response {'':<10}{header}")
        for kind in ("full", "minimal"):
            cells = "".join(f"{sizes.response[kind, e]:>10,}" for e in ENCODINGS)
            print(f"  {kind:<19}{cells}")
    print("\ntargets (bytes on the wire, gzip accepted):")
    batched, single = found[f"batch of {batch}"], found["single"]
    checks = [
        (f"batch of {batch}: request, gzip", batched.request_gzip, BATCH_TARGET),
        (f"batch of {batch}: minimal answer", batched.response["minimal", "gzip"], BATCH_TARGET),
        ("one minimal receipt", single.response["minimal", "gzip"], MINIMAL_TARGET),
    ]
    for label, value, limit in checks:
        passed = value <= limit
        ok &= passed
        print(f"  {label:<36} {value:>9,} B  <= {limit:>6,} B  {'PASS' if passed else 'FAIL'}")
    raw = single.response["minimal", "identity"]
    verdict = "within" if raw <= MINIMAL_TARGET else "over"
    print(f"  (one minimal receipt uncompressed: {raw:,} B, {verdict} {MINIMAL_TARGET:,} B)")
    return ok


async def _call(app: Any, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    scope = {"type": "http", "method": "POST", "path": "/v1/screenings", "headers": headers}
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop() if messages else {"type": "http.disconnect"}

    async def send(_message: Any) -> None:
        return None

    await app(scope, receive, send)


async def middleware_cost(rounds: int) -> dict[str, float]:
    """CPU µs per request: a bare ASGI app answering a full receipt, alone and through the
    request decoding and response compression middlewares."""
    from app.compression import RequestDecoding, response_compression
    from app.schemas.examples import RECEIPT

    answer = json.dumps(RECEIPT).encode()
    request = json.dumps(EXAMPLE).encode()

    async def bare(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(answer))]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    wrapped = response_compression(RequestDecoding(bare, max_bytes=2 * 1024 * 1024))
    json_type = (b"content-type", b"application/json")
    cases: dict[str, tuple[Any, bytes, list[tuple[bytes, bytes]]]] = {
        "bare app": (bare, request, [json_type]),
        "middlewares, identity": (wrapped, request, [json_type]),
    }
    gzipped = gzip.compress(request, 6)
    for coding in ("gzip", "br", "zstd"):
        headers = [json_type, (b"content-encoding", b"gzip"), (b"accept-encoding", coding.encode())]
        cases[f"middlewares, gzip body, {coding} answer"] = (wrapped, gzipped, headers)
    found: dict[str, float] = {}
    for name, (app, body, headers) in cases.items():
        for _ in range(rounds // 10):  # warm-up
            await _call(app, body, headers)
        started = time.process_time()
        for _ in range(rounds):
            await _call(app, body, headers)
        found[name] = (time.process_time() - started) / rounds * 1e6
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2000, help="for the middleware cost")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ruta-wire-") as scratch:
        directory = write_directory(Path(scratch) / "directory.yaml", "https://bench.invalid")
        url = f"sqlite+aiosqlite:///{scratch}/bench.db"
        env = wrk_bench.ruta_env(url, 8000, 1, directory)  # no server is started
        key = wrk_bench.create_key(env)
        found = asyncio.run(measure(env, key, args.batch))
    ok = report(found, args.batch)
    from app.schemas.examples import RECEIPT

    sizes = f"{len(json.dumps(EXAMPLE)):,} B request, {len(json.dumps(RECEIPT)):,} B answer"
    print(f"\nmiddleware CPU per request ({sizes}):")
    for name, micros in asyncio.run(middleware_cost(args.rounds)).items():
        print(f"  {name:<40} {micros:8.1f} µs")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
