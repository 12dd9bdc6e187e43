"""Outbound HTTP: explicit timeouts, no redirects, a capped response, and an address policy.

Outside development and tests a partner URL must be https and every address its host
resolves to must be public: no loopback, private, link-local or metadata addresses. The
check runs before each attempt; redirects are never followed, so a partner cannot bounce a
referral somewhere else.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from app.delivery.policy import Result, parse_retry_after
from app.partners.directory import UnsafePartnerURL, check_partner_url, is_public_address

RESPONSE_CAP = 4096
TIMEOUT = httpx.Timeout(connect=5.0, read=10.0, write=10.0, pool=5.0)


@dataclass(frozen=True, slots=True)
class Sent:
    result: Result
    latency_ms: int
    excerpt: str | None


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


async def check_destination(url: str, *, relaxed: bool, loopback_only: bool = False) -> None:
    """Raise UnsafePartnerURL unless the URL may receive referrals."""
    check_partner_url(url, relaxed)
    if loopback_only and (urlsplit(url).hostname or "") not in LOOPBACK_HOSTS:
        raise UnsafePartnerURL("in tests, partners must listen on loopback")
    if relaxed:
        return
    host = urlsplit(url).hostname or ""
    try:
        ipaddress.ip_address(host)
        return  # a literal address was already checked by check_partner_url
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, 443, type=socket.SOCK_STREAM)
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not is_public_address(address):
            raise UnsafePartnerURL("the partner's host resolves to a non-public address")


async def post(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    relaxed: bool,
    loopback_only: bool = False,
) -> Sent:
    started = time.perf_counter()
    try:
        await check_destination(url, relaxed=relaxed, loopback_only=loopback_only)
    except (UnsafePartnerURL, OSError) as exc:
        # Not retried as a network error: the destination itself is refused.
        return Sent(
            Result(status_code=None, error=f"refused_destination:{type(exc).__name__}"), 0, None
        )
    try:
        async with client.stream("POST", url, content=body, headers=headers) as response:
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if size >= RESPONSE_CAP:
                    break
            excerpt = b"".join(chunks)[:RESPONSE_CAP].decode("utf-8", "replace")[:512]
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            result = Result(status_code=response.status_code, retry_after=retry_after)
    except httpx.TimeoutException:
        result, excerpt = Result(status_code=None, error="timeout"), None
    except httpx.HTTPError as exc:
        result, excerpt = Result(status_code=None, error=f"connection:{type(exc).__name__}"), None
    latency = int((time.perf_counter() - started) * 1000)
    return Sent(result, latency, excerpt)


def new_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=TIMEOUT,
        follow_redirects=False,
        limits=httpx.Limits(max_connections=50, max_keepalive_connections=20),
        trust_env=False,
    )
