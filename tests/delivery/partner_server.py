"""A real partner HTTP server on loopback, for delivery tests (no mocks).

It verifies every request's Standard Webhooks signature, records what it received, and
answers as the test tells it to: 200, 500, 429 with Retry-After, 410, a redirect, or a hang.
It also counts the requests it is serving at once (``max_in_flight``); ``delay`` holds each
request open that long first, so overlapping requests really overlap.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

SECRET = "whsec_" + "dGVzdC1wYXJ0bmVyLXNlY3JldC0wMTIzNDU2Nzg5YWJjZA=="


@dataclass
class Received:
    webhook_id: str
    body: bytes
    headers: dict[str, str]
    verified: bool


@dataclass
class PartnerServer:
    secret: str = SECRET
    #: Answers to give, in order; when empty, ``default``.
    script: list[Any] = field(default_factory=list)
    default: Any = 200
    received: list[Received] = field(default_factory=list)
    port: int = 0
    #: Seconds to hold each request before answering.
    delay: float = 0.0
    in_flight: int = 0
    max_in_flight: int = 0
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/inbox"

    async def _inbox(self, request: Request) -> Response:
        # One event loop serves every request: these counters need no lock.
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            return await self._answer(request)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: Request) -> Response:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            Webhook(self.secret).verify(body, headers)
            verified = True
        except WebhookVerificationError:
            verified = False
        self.received.append(Received(headers.get("webhook-id", ""), body, headers, verified))
        answer = self.script.pop(0) if self.script else self.default
        if answer == "hang":
            await asyncio.sleep(5)
            return Response(status_code=200)
        if isinstance(answer, tuple):
            status, extra = answer
            return Response(status_code=status, headers=extra)
        if answer in (301, 302, 307, 308):
            return Response(status_code=answer, headers={"location": "http://127.0.0.1:9/x"})
        return JSONResponse({"ok": answer == 200}, status_code=int(answer))

    def start(self) -> PartnerServer:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        app = Starlette(routes=[Route("/inbox", self._inbox, methods=["POST"])])
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="error", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("partner server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)


def closed_port_url() -> str:
    """A loopback URL where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/inbox"
