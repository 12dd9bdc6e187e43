from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from app.partners.directory import (
    DEMO_DIRECTORY,
    DirectoryError,
    Hours,
    PartnerId,
    ServiceArea,
    UnsafePartnerURL,
    check_partner_url,
    directory_env,
    is_public_address,
    load_directory,
)
from app.schemas.screening import Region


@pytest.mark.parametrize(
    "url",
    [
        "http://partner.example.org/hook",
        "https://127.0.0.1/hook",
        "https://10.1.2.3/hook",
        "https://192.168.0.10/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://[fe80::1]/hook",
        "https://localhost/hook",
        "https://LOCALHOST./hook",
        "https://api.localhost/hook",
        "https://printer.local/hook",
        "https://intranet/hook",
        "https://2130706433/hook",
        "https://127.1/hook",
        "https://0x7f.0.0.1/hook",
        "https://0.0.0.0/hook",
        "https://user:pass@partner.example.org/hook",
        "ftp://partner.example.org/hook",
        "https://partner.example.org/hook#frag",
    ],
)
def test_unsafe_urls_are_refused_outside_development(url: str) -> None:
    with pytest.raises(UnsafePartnerURL) as excinfo:
        check_partner_url(url, relaxed=False)
    assert url not in str(excinfo.value)


@pytest.mark.parametrize(
    "url", ["https://partner.example.org/hook", "https://93.184.216.34:8443/x"]
)
def test_public_https_urls_pass(url: str) -> None:
    assert check_partner_url(url, relaxed=False) == url


def test_relaxed_allows_loopback_http_but_not_credentials() -> None:
    assert check_partner_url("http://127.0.0.1:8000/demo", relaxed=True)
    with pytest.raises(UnsafePartnerURL):
        check_partner_url("http://u:p@127.0.0.1/", relaxed=True)


def test_is_public_address() -> None:
    assert is_public_address(ipaddress.ip_address("93.184.216.34"))
    assert not is_public_address(ipaddress.ip_address("100.64.0.1"))  # carrier-grade NAT
    assert not is_public_address(ipaddress.ip_address("::ffff:10.0.0.1"))


#: Stands for a partner's public address; no packet is ever sent to it.
PUBLIC = "93.184.216.34"

#: What a host may resolve to, and whether a referral may be sent there.
ADDRESS_FORMS = [
    (PUBLIC, True),
    ("2606:4700::1111", True),
    ("64:ff9b::5db8:d822", True),  # NAT64 of 93.184.216.34
    ("2002:5db8:d822::1", True),  # 6to4 of 93.184.216.34
    ("::ffff:93.184.216.34", True),  # IPv4-mapped
    ("127.0.0.1", False),
    ("10.1.2.3", False),
    ("169.254.169.254", False),
    ("100.64.0.1", False),
    ("::1", False),
    ("fe80::1", False),
    ("fc00::1", False),
    ("64:ff9b::7f00:1", False),  # NAT64 of 127.0.0.1
    ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
    ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254
    ("64:ff9b:1::7f00:1", False),  # local-use NAT64 (RFC 8215)
    ("64:ff9b:1::5db8:d822", False),  # local-use NAT64, whatever it embeds
    ("::7f00:1", False),  # IPv4-compatible ::127.0.0.1
    ("::a00:1", False),  # IPv4-compatible ::10.0.0.1
    ("::5db8:d822", False),  # IPv4-compatible, deprecated whatever it embeds
    ("::ffff:127.0.0.1", False),  # IPv4-mapped loopback
    ("::ffff:0:7f00:1", False),  # IPv4-translated
    ("2002:7f00:1::1", False),  # 6to4 of 127.0.0.1
    ("2002:a00:1::1", False),  # 6to4 of 10.0.0.1
    ("2002:c0a8:101::1", False),  # 6to4 of 192.168.1.1
    ("2001::1", False),  # Teredo
    ("fec0::1", False),  # site-local
    ("3fff::1", False),  # documentation
    ("ff02::1", False),  # multicast
]


#: URLs that ``urlsplit`` would read as another URL (it drops tab, CR and LF) or that
#: carry characters no one can see.
INVISIBLE_CHARACTER_URLS = [
    "https://partner.example.org/in\nbox",
    "https://partner.example.org/in\r\nX-Injected: 1",
    "https://partner.example.org/in box",
    "https://partner.example.org/in\tbox",
    "https://part\tner.example.org/inbox",
    "https://partner.example.org\n/inbox",
    "https://partner.example.org/inbox\x00",
    "https://partner.example.org/inbox\x7f",
    "https://partner.example.org/in\u200bbox",
    " https://partner.example.org/inbox",
]


@pytest.mark.parametrize(("address", "public"), ADDRESS_FORMS)
def test_address_forms(address: str, public: bool) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is public
    host = f"[{address}]" if ":" in address else address
    url = f"https://{host}/hook"
    if public:
        assert check_partner_url(url, relaxed=False) == url
    else:
        with pytest.raises(UnsafePartnerURL, match="non-public address"):
            check_partner_url(url, relaxed=False)


@pytest.mark.parametrize("url", INVISIBLE_CHARACTER_URLS)
@pytest.mark.parametrize("relaxed", [False, True])
def test_urls_with_whitespace_or_controls_are_refused(url: str, relaxed: bool) -> None:
    with pytest.raises(UnsafePartnerURL, match="whitespace or control characters"):
        check_partner_url(url, relaxed=relaxed)


def test_demo_directory_covers_the_regions_of_domain_md() -> None:
    directory = load_directory(DEMO_DIRECTORY, relaxed=True, env=directory_env("http://x:1/"))
    regions = {r for p in directory.partners for r in p.service_area.regions}
    named = {"amazonas", "callao", "cajamarca", "cusco", "loreto", "lima", "madre_de_dios"}
    named |= {"pasco", "piura", "puno", "tacna", "tumbes"}
    assert {Region(r) for r in named} <= regions
    assert all("(demo)" in p.name for p in directory.partners)
    urls = [p.endpoint.url for p in directory.partners if p.endpoint.url is not None]
    assert all(url.startswith("http://x:1/demo/partners/") for url in urls)
    # One partner works only in the console (docs/console.md).
    assert [p.id for p in directory.partners if p.endpoint.console_only] == ["cem-puerto-maldonado"]
    assert all(not p.endpoint.secrets for p in directory.partners)
    assert any(p.service_area.national for p in directory.partners)


def test_loader_errors_name_partner_and_path_without_values(tmp_path: Path) -> None:
    path = tmp_path / "d.yaml"
    path.write_text(
        """
version: 1
partners:
  - id: ok-one
    organisation: {id: ok-one, name: OK}
    name: OK
    services: [medical]
    service_area: {regions: [Cusco]}
    languages: [es]
    capacity: {available: 1, maximum: 1}
    endpoint: {url: "https://ok.example.org/x", secrets: ["${OK_SECRET}"]}
  - id: broken
    organisation: {id: broken, name: Broken}
    name: Broken
    services: [medicine]
    service_area: {}
    languages: [es]
    capacity: {available: 5, maximum: 1}
    endpoint: {url: "https://127.0.0.1/x", secrets: ["whsec_TOPSECRETVALUE"]}
"""
    )
    with pytest.raises(DirectoryError) as excinfo:
        load_directory(path, relaxed=False, env={})
    message = str(excinfo.value)
    assert "partners[0] (id=ok-one): endpoint.secrets.0: ${OK_SECRET} is not set" in message
    assert "partners[1] (id=broken): services.0" in message
    assert "partners[1] (id=broken): service_area" in message
    assert "partners[1] (id=broken): capacity" in message
    assert "partners[1] (id=broken): endpoint.secrets.0" in message
    assert "TOPSECRETVALUE" not in message
    assert "127.0.0.1" not in message


def test_a_directory_file_with_a_line_break_in_a_url_is_refused(tmp_path: Path) -> None:
    """YAML's escapes can put a CR/LF in a URL; urlsplit would have dropped it unseen."""
    text = DEMO_DIRECTORY.read_text()
    path = tmp_path / "crlf.yaml"
    start = text.index("url:", text.index("- id:"))
    end = text.index("\n", start)
    path.write_text(text[:start] + 'url: "https://ok.example.org/in\\r\\nbox"' + text[end:])
    with pytest.raises(DirectoryError, match=r"endpoint\.url"):
        load_directory(path, relaxed=True, env=directory_env("http://x"))


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    text = DEMO_DIRECTORY.read_text()
    path = tmp_path / "dup.yaml"
    first = text.index("- id:")
    second = text.index("- id:", first + 1)
    path.write_text(text + text[first:second])
    with pytest.raises(DirectoryError, match="duplicate partner id"):
        load_directory(path, relaxed=True, env=directory_env("http://x"))


def test_opening_hours_in_lima_time() -> None:
    hours = Hours.model_validate(
        {"schedule": [{"days": ["mon"], "opens": "08:00", "closes": "17:00"}]}
    )
    # Monday 2026-11-23 09:00 in Lima is 14:00 UTC.
    assert hours.open_at(datetime(2026, 11, 23, 14, 0, tzinfo=UTC))
    assert not hours.open_at(datetime(2026, 11, 23, 23, 0, tzinfo=UTC))


@pytest.mark.parametrize("ident", ["0000000", "1234-5678", "-abc", "Hospital", ""])
def test_partner_ids_need_a_letter_and_lowercase(ident: str) -> None:
    # All-digit ids would be refused by the audit trail (they look like phone numbers).
    with pytest.raises(ValidationError):
        TypeAdapter(PartnerId).validate_python(ident)


@pytest.mark.parametrize("ident", ["a", "hospital-santa-rosa-mdd", "0a", "12-ugel3", "x-1"])
def test_partner_ids_that_pass(ident: str) -> None:
    assert TypeAdapter(PartnerId).validate_python(ident) == ident


def test_a_national_area_serves_everywhere_but_regionally_only_where_it_lists() -> None:
    """Matching prefers partners that serve the person's region by their regions or ubigeo
    prefixes; ``national`` makes an area serve everyone without making it regional."""
    area = ServiceArea(national=True, regions=frozenset({Region.madre_de_dios}))
    assert area.serves(Region.cusco, None)
    assert area.serves_regionally(Region.madre_de_dios, None)
    assert not area.serves_regionally(Region.cusco, "080101")
    by_prefix = ServiceArea(ubigeo_prefixes=frozenset({"1701", "08"}))
    assert by_prefix.serves_regionally(Region.cusco, None)  # "08" is Cusco's department
    assert by_prefix.serves_regionally(Region.madre_de_dios, "170101")
    assert not by_prefix.serves_regionally(Region.madre_de_dios, None)
    assert not by_prefix.serves(Region.lima, "150101")
