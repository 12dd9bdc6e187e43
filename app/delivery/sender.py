"""Outbound HTTP: explicit timeouts, no redirects, a capped response, and an address policy.

Outside development and tests a partner URL must be https and every address its host
resolves to must be public: no loopback, private, link-local or metadata addresses, nor an
IPv6 form that leads to one (NAT64, 6to4, IPv4-mapped). The check runs before each attempt,
on one lookup of the host, and the connection goes to an address that lookup returned:
the client never resolves the name again, so a DNS answer that changes between the check
and the connection (DNS rebinding) cannot send a referral elsewhere. TLS still presents and
verifies the partner's host name (SNI and certificate). Redirects are never followed, so a
partner cannot bounce a referral somewhere else.

A connection kept alive in the pool is reused for the same host; it was opened to an
address that was checked when it was opened.
"""

from __future__ import annotations

import asyncio
import contextvars
import ipaddress
import socket
import ssl
import time
import typing
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpcore
import httpx

from app.delivery.policy import Result, parse_retry_after
from app.partners.directory import UnsafePartnerURL, check_partner_url, is_public_address

RESPONSE_CAP = 4096
TIMEOUT = httpx.Timeout(connect=5.0, read=10.0, write=10.0, pool=5.0)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Sent:
    result: Result
    latency_ms: int
    excerpt: str | None


@dataclass(frozen=True, slots=True)
class Destination:
    """A host and the addresses the policy checked for it: the only ones to connect to."""

    host: str
    addresses: tuple[Address, ...]


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})

#: The destination the current delivery checked; read by the transport when it connects
#: (httpcore opens a connection in the task that sends the request).
_CHECKED: contextvars.ContextVar[Destination | None] = contextvars.ContextVar(
    "ruta_checked_destination", default=None
)


async def resolve(host: str) -> list[Address]:
    """Every address ``host`` resolves to (one lookup)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, 443, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))


async def check_destination(
    url: str, *, relaxed: bool, loopback_only: bool = False
) -> Destination | None:
    """Raise UnsafePartnerURL unless the URL may receive referrals; return the addresses
    to connect to (None when ``relaxed``: development and tests connect by name)."""
    check_partner_url(url, relaxed)
    if loopback_only and (urlsplit(url).hostname or "") not in LOOPBACK_HOSTS:
        raise UnsafePartnerURL("in tests, partners must listen on loopback")
    if relaxed:
        return None
    # The host as the connection pool will name it: lower case, IDNA-encoded.
    host = httpx.URL(url).raw_host.decode("ascii")
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return Destination(host, (literal,))  # already checked by check_partner_url
    addresses = await resolve(host)
    if not addresses:
        raise UnsafePartnerURL("the partner's host does not resolve")
    if not all(is_public_address(address) for address in addresses):
        raise UnsafePartnerURL("the partner's host resolves to a non-public address")
    return Destination(host, tuple(addresses))


class CheckedAddressBackend(httpcore.AsyncNetworkBackend):
    """Opens TCP connections to the addresses the delivery's check returned, never by
    name. Without a checked destination (development and tests) it connects by name."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        checked = _CHECKED.get()
        if checked is None:
            return await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        if host != checked.host:
            raise httpcore.ConnectError("a connection to a host that was not checked")
        failure: Exception = httpcore.ConnectError("no address to connect to")
        for address in checked.addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc  # the next checked address, as a resolver-driven connect would
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("partners are reached over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class CheckedAddressTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with its connection pool on :class:`CheckedAddressBackend`.

    httpx does not take a network backend itself; the pool is httpcore's, built with the
    same settings httpx would give it. ``tests/delivery/test_sender.py`` fails if a new
    httpx stops using it.
    """

    def __init__(
        self,
        *,
        limits: httpx.Limits,
        verify: ssl.SSLContext | bool = True,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        ssl_context = httpx.create_ssl_context(verify=verify, trust_env=False)
        super().__init__(verify=ssl_context, limits=limits, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=CheckedAddressBackend(network_backend),
        )


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
        checked = await check_destination(url, relaxed=relaxed, loopback_only=loopback_only)
    except (UnsafePartnerURL, OSError) as exc:
        # Not retried as a network error: the destination itself is refused.
        return Sent(
            Result(status_code=None, error=f"refused_destination:{type(exc).__name__}"), 0, None
        )
    token = _CHECKED.set(checked)
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
    finally:
        _CHECKED.reset(token)
    latency = int((time.perf_counter() - started) * 1000)
    return Sent(result, latency, excerpt)


LIMITS = httpx.Limits(max_connections=50, max_keepalive_connections=20)


def new_client(
    *,
    verify: ssl.SSLContext | bool = True,
    network_backend: httpcore.AsyncNetworkBackend | None = None,
) -> httpx.AsyncClient:
    """The client deliveries are sent with. ``verify`` and ``network_backend`` are for
    tests (a test CA; a backend that records where connections go)."""
    return httpx.AsyncClient(
        transport=CheckedAddressTransport(
            limits=LIMITS, verify=verify, network_backend=network_backend
        ),
        timeout=TIMEOUT,
        follow_redirects=False,
        trust_env=False,
    )
