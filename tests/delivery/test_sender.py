"""The sender's address policy at delivery time, and that it connects to the address it
checked (DNS rebinding). Nothing here leaves this machine: a network backend stands
between the client and the sockets, records where each connection was meant to go, and
either refuses it or carries it to a server on loopback."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import socket
import ssl
import typing
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpcore
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from app.delivery import sender
from tests.partners.test_directory import ADDRESS_FORMS, INVISIBLE_CHARACTER_URLS, PUBLIC

HOST = "partner.example.org"
URL = f"https://{HOST}/inbox"


class Resolver:
    """``socket.getaddrinfo`` for HOST answers from ``answers`` in turn (the last one
    repeats); every other name goes to the real resolver."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.lookups = 0
        self._real = socket.getaddrinfo

    def __call__(self, host: typing.Any, port: typing.Any, *args: typing.Any, **kw: typing.Any):  # type: ignore[no-untyped-def]
        if host != HOST:
            return self._real(host, port, *args, **kw)
        answer = self.answers[min(self.lookups, len(self.answers) - 1)]
        self.lookups += 1
        out = []
        for address in answer:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sockaddr = (address, 443, 0, 0) if family == socket.AF_INET6 else (address, 443)
            out.append((family, socket.SOCK_STREAM, 6, "", sockaddr))
        return out


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Resolver:
    fake = Resolver([PUBLIC], ["127.0.0.1"])
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return fake


class Network(httpcore.AnyIOBackend):
    """Records every TCP connection asked for; carries those to ``routes`` (address ->
    loopback port) to loopback, and refuses the rest without touching the network."""

    def __init__(self, routes: dict[str, int] | None = None) -> None:
        self.routes = routes or {}
        self.asked: list[tuple[str, int]] = []

    async def connect_tcp(
        self, host: str, port: int, *args: typing.Any, **kwargs: typing.Any
    ) -> httpcore.AsyncNetworkStream:
        self.asked.append((host, port))
        if host not in self.routes:
            raise httpcore.ConnectError("not routed in this test")
        return await super().connect_tcp("127.0.0.1", self.routes[host], *args, **kwargs)


def _certificates(directory: Path) -> tuple[Path, Path, bytes]:
    """A test CA and a certificate for HOST signed by it: (cert file, key file, CA PEM)."""
    now = dt.datetime.now(dt.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("Ruta test CA"))
        .issuer_name(name("Ruta test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name(HOST))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = directory / "partner.pem", directory / "partner.key"
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file, ca.public_bytes(serialization.Encoding.PEM)


@dataclass
class TlsPartner:
    """An HTTPS partner on loopback that records the SNI name and Host header it got."""

    port: int
    ca: bytes
    server_names: list[str | None] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)


@pytest.fixture
async def tls_partner(tmp_path: Path) -> AsyncIterator[TlsPartner]:
    cert_file, key_file, ca = _certificates(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    partner = TlsPartner(port=0, ca=ca)

    def sni(_sock: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        partner.server_names.append(server_name)

    context.sni_callback = sni

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            lines = head.decode("latin-1").split("\r\n")
            headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
            headers = {k.lower(): v for k, v in headers.items()}
            partner.hosts.append(headers.get("host", ""))
            await reader.readexactly(int(headers.get("content-length", "0")))
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    partner.port = server.sockets[0].getsockname()[1]
    try:
        yield partner
    finally:
        server.close()
        await server.wait_closed()


async def test_connection_goes_to_the_checked_address_when_dns_changes_its_answer(
    resolver: Resolver, tls_partner: TlsPartner
) -> None:
    """The first lookup answers a public address, any later one loopback (rebinding). The
    sender looks up once, connects to the public address it checked, and TLS still names
    and verifies the partner's host."""
    network = Network(routes={PUBLIC: tls_partner.port})
    client = sender.new_client(
        verify=ssl.create_default_context(cadata=tls_partner.ca.decode()),
        network_backend=network,
    )
    async with client:
        sent = await sender.post(client, URL, b"{}", {}, relaxed=False)
    assert sent.result.status_code == 200, sent.result
    assert network.asked == [(PUBLIC, 443)]
    assert resolver.lookups == 1
    assert tls_partner.server_names == [HOST]
    assert tls_partner.hosts == [HOST]


async def test_certificate_is_still_verified_against_the_host_name(
    resolver: Resolver, tls_partner: TlsPartner
) -> None:
    """Connecting to an address does not weaken TLS: a client that does not trust the
    partner's CA refuses the connection."""
    network = Network(routes={PUBLIC: tls_partner.port})
    async with sender.new_client(network_backend=network) as client:
        sent = await sender.post(client, URL, b"{}", {}, relaxed=False)
    assert sent.result.status_code is None
    assert sent.result.error == "connection:ConnectError"
    assert network.asked == [(PUBLIC, 443)]


async def test_every_checked_address_is_tried_in_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = Resolver([PUBLIC, "2606:4700::1111"])
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    network = Network()
    async with sender.new_client(network_backend=network) as client:
        sent = await sender.post(client, URL, b"{}", {}, relaxed=False)
    assert sent.result.error == "connection:ConnectError"
    assert network.asked == [(PUBLIC, 443), ("2606:4700::1111", 443)]
    assert fake.lookups == 1


@pytest.mark.parametrize(("address", "public"), ADDRESS_FORMS)
async def test_address_forms_at_delivery(
    monkeypatch: pytest.MonkeyPatch, address: str, public: bool
) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", Resolver([address]))
    network = Network()
    async with sender.new_client(network_backend=network) as client:
        sent = await sender.post(client, URL, b"{}", {}, relaxed=False)
    if public:
        assert sent.result.error == "connection:ConnectError"  # refused by Network only
        assert network.asked == [(str(ipaddress.ip_address(address)), 443)]
    else:
        assert sent.result.error == "refused_destination:UnsafePartnerURL"
        assert network.asked == []


@pytest.mark.parametrize(("address", "public"), ADDRESS_FORMS)
async def test_address_forms_as_literal_urls_at_delivery(address: str, public: bool) -> None:
    host = f"[{address}]" if ":" in address else address
    network = Network()
    async with sender.new_client(network_backend=network) as client:
        sent = await sender.post(client, f"https://{host}/inbox", b"{}", {}, relaxed=False)
    if public:
        assert network.asked == [(str(ipaddress.ip_address(address)), 443)]
    else:
        assert sent.result.error == "refused_destination:UnsafePartnerURL"
        assert network.asked == []


@pytest.mark.parametrize("url", INVISIBLE_CHARACTER_URLS)
@pytest.mark.parametrize("relaxed", [False, True])
async def test_urls_with_whitespace_or_controls_are_refused_at_delivery(
    resolver: Resolver, url: str, relaxed: bool
) -> None:
    network = Network()
    async with sender.new_client(network_backend=network) as client:
        sent = await sender.post(client, url, b"{}", {}, relaxed=relaxed)
    assert sent.result.error == "refused_destination:UnsafePartnerURL"
    assert network.asked == []
    assert resolver.lookups == 0


async def test_a_host_that_does_not_resolve_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_args: typing.Any, **_kw: typing.Any) -> typing.NoReturn:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    network = Network()
    async with sender.new_client(network_backend=network) as client:
        sent = await sender.post(client, URL, b"{}", {}, relaxed=False)
    assert sent.result.error == "refused_destination:gaierror"
    assert network.asked == []
