"""The partner directory: who can receive which referrals, where, for whom, and how.

Field names follow Open Referral HSDS where it has one: an ``organization`` offers a
``service`` in a ``service_area`` with ``eligibility``, ``languages`` and a ``schedule``
(opening hours in the partner's own time zone). Ruta adds what routing needs: the partner's
**role** (child-protection authority, law enforcement, shelter, …: the protocol limits which
roles may receive what), capacity, priority, status and the endpoint a referral is
delivered to.

A directory file (YAML or JSON) is validated as a whole when loaded; every error names the
partner and the field path, and never quotes the value (a file may carry secrets).
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import ipaddress
import json
import os
import re
import socket
import unicodedata
from collections.abc import Mapping
from datetime import datetime, time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from app.schemas.decision import PartnerRole
from app.schemas.screening import (
    UBIGEO_DEPARTMENTS,
    AwareDatetime,
    Language,
    Region,
    ServiceCategory,
    Sex,
    SortedSets,
    Strict,
)

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format prefix, not a secret
#: A partner id appears in URLs and audit events: a short lowercase slug.
#: Lowercase letters, digits and hyphens, with at least one letter: partner ids travel in the
#: audit trail, which refuses a bare run of digits (it could be a phone or document number).
_PARTNER_ID_PATTERN = r"^(?:[a-z]|[0-9][0-9-]*[a-z])[a-z0-9-]*$"
PartnerId = Annotated[str, Field(min_length=1, max_length=64, pattern=_PARTNER_ID_PATTERN)]
_PARTNER_ID = re.compile(_PARTNER_ID_PATTERN)


class DirectoryStatus(StrEnum):
    """Whether matching considers a directory entry: ``active``, or ``paused`` by an admin.
    Not the status a partner reports on a referral (``app.referrals.state.PartnerStatus``)."""

    active = "active"
    paused = "paused"


#: The name other modules import (kept while branches that use it are merged); the OpenAPI
#: document knows only DirectoryStatus, so clients do not confuse the two enums.
PartnerStatus = DirectoryStatus


class PayloadFormat(StrEnum):
    ruta_json = "ruta-json"
    fhir_r4 = "fhir-r4"


class Weekday(StrEnum):
    mon = "mon"
    tue = "tue"
    wed = "wed"
    thu = "thu"
    fri = "fri"
    sat = "sat"
    sun = "sun"


WEEKDAYS = tuple(Weekday)


class Organisation(Strict):
    """HSDS ``organization``."""

    id: PartnerId
    name: str = Field(min_length=1, max_length=200)


class ServiceArea(SortedSets):
    """HSDS ``service_area``: departments and/or ubigeo prefixes, or the whole country."""

    national: bool = False
    regions: frozenset[Region] = frozenset()
    ubigeo_prefixes: frozenset[Annotated[str, Field(pattern=r"^[0-9]{2}([0-9]{2}){0,2}$")]] = (
        frozenset()
    )

    @field_validator("regions", mode="before")
    @classmethod
    def _regions(cls, value: Any) -> Any:
        from app.schemas.screening import parse_region

        if isinstance(value, list | tuple | set | frozenset):
            return [parse_region(v) if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> ServiceArea:
        if not self.national and not self.regions and not self.ubigeo_prefixes:
            raise ValueError("a service area needs national: true, regions or ubigeo_prefixes")
        return self

    def serves(self, region: Region, ubigeo: str | None) -> bool:
        """Whether a person in ``region`` (district ``ubigeo`` if known) is in this area.

        A prefix finer than the department matches only a known ubigeo: a province-level
        partner is not assumed to serve a person whose district is unknown.
        """
        return self.national or self.serves_regionally(region, ubigeo)

    def serves_regionally(self, region: Region, ubigeo: str | None) -> bool:
        """:meth:`serves` by the area's regions and ubigeo prefixes alone, ``national``
        aside (matching prefers a partner that serves the person's region this way)."""
        if region in self.regions:
            return True
        for prefix in self.ubigeo_prefixes:
            if len(prefix) == 2 and UBIGEO_DEPARTMENTS.get(prefix) is region:
                return True
            if ubigeo is not None and ubigeo.startswith(prefix):
                return True
        return False


class Eligibility(SortedSets):
    """HSDS ``eligibility``. An empty ``sexes`` means every sex is accepted."""

    min_age: int | None = Field(default=None, ge=0, le=120)
    max_age: int | None = Field(default=None, ge=0, le=120)
    sexes: frozenset[Sex] = frozenset()

    @model_validator(mode="after")
    def _range(self) -> Eligibility:
        if self.min_age is not None and self.max_age is not None and self.min_age > self.max_age:
            raise ValueError("min_age is greater than max_age")
        return self

    @property
    def accepts_minors(self) -> bool:
        return self.min_age is None or self.min_age < 18

    @property
    def accepts_adults(self) -> bool:
        return self.max_age is None or self.max_age >= 18


class Capacity(Strict):
    """How many new referrals the partner can take now. Partners report it at runtime."""

    available: int = Field(ge=0, le=100_000)
    maximum: int = Field(ge=0, le=100_000)
    updated_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _within_maximum(self) -> Capacity:
        if self.available > self.maximum:
            raise ValueError("available exceeds maximum")
        return self


class OpeningHours(SortedSets):
    """HSDS ``schedule``, simplified: the same hours on the listed days, in the partner's
    time zone."""

    days: frozenset[Weekday] = Field(min_length=1)
    opens: time
    closes: time

    @model_validator(mode="after")
    def _order(self) -> OpeningHours:
        if self.opens >= self.closes:
            raise ValueError("opens must be before closes (split overnight hours in two)")
        return self


def _zone(name: str) -> str:
    try:
        ZoneInfo(name)  # cached by zoneinfo: matching reads it again for free
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("not an IANA time zone name, e.g. America/Lima") from None
    return name


class Hours(Strict):
    """When the partner can act on a referral. ``schedule`` is read in ``timezone`` (IANA
    name; default America/Lima), so an office in another zone is open when it says it is."""

    timezone: Annotated[str, AfterValidator(_zone), Field(max_length=64)] = "America/Lima"
    always_open: bool = False
    schedule: tuple[OpeningHours, ...] = ()

    @model_validator(mode="after")
    def _some_hours(self) -> Hours:
        if not self.always_open and not self.schedule:
            raise ValueError("hours need always_open: true or a schedule")
        return self

    def open_at(self, moment: datetime) -> bool:
        """Whether the partner is open at ``moment`` (an aware datetime), in its own zone."""
        if self.always_open:
            return True
        local = moment.astimezone(ZoneInfo(self.timezone))
        day = WEEKDAYS[local.weekday()]
        return any(
            day in slot.days and slot.opens <= local.time() < slot.closes for slot in self.schedule
        )


def _check_secret(value: SecretStr) -> SecretStr:
    raw = value.get_secret_value()
    if not raw.startswith(SECRET_PREFIX):
        raise ValueError("a signing secret starts with whsec_")
    try:
        key = base64.b64decode(raw[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a signing secret is whsec_ followed by base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError("a signing secret must hold 24 to 64 random bytes")
    return value


SigningSecret = Annotated[
    SecretStr, AfterValidator(_check_secret), Field(description="whsec_<base64>, write-only")
]


class Endpoint(Strict):
    """Where referrals are delivered. Without a ``url`` the partner is served only through
    the console: its referrals wait in its console inbox, with the same deadlines and
    fallback as any other (docs/partners.md, "Console-only partners")."""

    url: str | None = Field(default=None, min_length=8, max_length=2000)
    #: Several secrets overlap during rotation; every one signs (Standard Webhooks).
    secrets: tuple[SigningSecret, ...] = Field(default=(), max_length=4)
    format: PayloadFormat = PayloadFormat.ruta_json
    thin: bool = Field(
        default=False,
        description="Send only ids and a link; the partner fetches the details itself.",
    )

    @field_validator("url")
    @classmethod
    def _url_shape(cls, value: str | None) -> str | None:
        if value is not None:
            check_partner_url(value, relaxed=True)  # the shape; the network policy comes later
        return value

    @model_validator(mode="after")
    def _console_only_shape(self) -> Endpoint:
        if self.url is None and (self.thin or self.format is not PayloadFormat.ruta_json):
            raise ValueError(
                "a partner without an endpoint url reads its referrals in the console: "
                "thin and format apply only to an endpoint"
            )
        return self

    @property
    def console_only(self) -> bool:
        return self.url is None


class Partner(SortedSets):
    id: PartnerId
    organisation: Organisation
    name: str = Field(min_length=1, max_length=200, description="HSDS service name.")
    role: PartnerRole = Field(
        description="What kind of organisation this is: the protocol limits which roles may "
        "receive what (law_enforcement only with the person's law_enforcement consent; "
        "child_protection_authority for every child's protection referral; "
        "notification_recipient only non-identifying notifications). Required: an unmarked "
        "police unit must never pass for a shelter."
    )
    description: str | None = Field(default=None, max_length=1000)
    #: Empty only for a notification recipient, which takes no referral.
    services: frozenset[ServiceCategory] = Field(default=frozenset())
    service_area: ServiceArea
    eligibility: Eligibility = Eligibility()
    languages: frozenset[Language] = Field(min_length=1)
    capacity: Capacity
    hours: Hours = Hours(always_open=True)
    #: Omitted, or without a url: a console-only partner.
    endpoint: Endpoint = Endpoint()
    status: DirectoryStatus = DirectoryStatus.active
    #: Lower is tried first among otherwise equal partners.
    priority: int = Field(default=100, ge=0, le=10_000)

    @model_validator(mode="after")
    def _services_for_role(self) -> Partner:
        notifications = self.role is PartnerRole.notification_recipient
        if notifications and self.services:
            raise ValueError("a notification_recipient takes no referral: list no services")
        if notifications and (
            self.endpoint.thin or self.endpoint.format is not PayloadFormat.ruta_json
        ):
            raise ValueError("a notification_recipient receives ruta-json, not thin")
        if notifications and self.endpoint.console_only:
            raise ValueError("a notification_recipient needs an endpoint url")
        if not notifications and not self.services:
            raise ValueError("services: list at least one service category")
        return self


class Directory(Strict):
    version: Literal[1] = 1
    partners: tuple[Partner, ...]

    @model_validator(mode="after")
    def _unique(self) -> Directory:
        seen: set[str] = set()
        for partner in self.partners:
            if partner.id in seen:
                raise ValueError(f"duplicate partner id {partner.id}")
            seen.add(partner.id)
        return self


# --- URL policy --------------------------------------------------------------------------

_BLOCKED_HOST_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa")
_BLOCKED_HOSTS = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$")


class UnsafePartnerURL(ValueError):
    """A partner URL that the network policy refuses. The message never quotes the URL."""


#: NAT64's well-known prefix (RFC 6052): the last 32 bits are the IPv4 address a NAT64
#: gateway connects to, so the address is as public as that IPv4 address.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
#: The only IPv6 space with public unicast addresses (RFC 4291, IANA). Outside it: the
#: IPv4-compatible (``::a.b.c.d``, deprecated) and IPv4-translated forms, local-use NAT64
#: (``64:ff9b:1::/48``, RFC 8215), site-local ``fec0::/10``, and every other reserved range.
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
#: Inside 2000::/3 but never a partner: documentation (RFC 9637; 2001:db8::/32 is already
#: not global).
_NOT_PARTNERS = (ipaddress.IPv6Network("3fff::/20"),)


def is_public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """A globally routable unicast address (not private, loopback, link-local, reserved…).

    An IPv6 address that carries an IPv4 address (IPv4-mapped, NAT64's well-known prefix,
    6to4) is judged by the IPv4 address it leads to. The delivery worker applies the same
    test to every address a hostname resolves to.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
        if embedded is not None:
            return is_public_address(embedded)
        if address not in _GLOBAL_UNICAST or any(address in n for n in _NOT_PARTNERS):
            return False
    return bool(address.is_global) and not address.is_multicast


def _has_invisible_characters(url: str) -> bool:
    """Whitespace or control characters: ``urlsplit`` silently drops tab, CR and LF, so a
    URL holding them is checked as one URL and stored, logged and sent as another."""
    return any(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf") for ch in url)


def check_partner_url(url: str, relaxed: bool) -> str:
    """Refuse partner URLs the network policy does not allow; return the URL unchanged.

    Always: http(s) only, a host, no credentials in the URL, no fragment, no whitespace or
    control characters. Unless ``relaxed`` (development and tests): https only, and no
    loopback, private, link-local or otherwise non-public literal address or local
    hostname. DNS is not resolved here: before each delivery the sender resolves the host,
    checks every address with :func:`is_public_address`, and connects to an address it
    checked (app/delivery/sender.py).
    """
    if _has_invisible_characters(url):
        raise UnsafePartnerURL("the URL must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafePartnerURL("not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafePartnerURL("the scheme must be https (or http in development)")
    if not parts.hostname:
        raise UnsafePartnerURL("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafePartnerURL("credentials must not be part of the URL")
    if parts.fragment:
        raise UnsafePartnerURL("the URL must not have a fragment")
    if port == 0:
        raise UnsafePartnerURL("port 0 is not allowed")
    if relaxed:
        return url
    if parts.scheme != "https":
        raise UnsafePartnerURL("partner URLs must use https")
    host = parts.hostname.lower().rstrip(".")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        if not is_public_address(address):
            raise UnsafePartnerURL("the URL points at a non-public address")
        return url
    if _NUMERIC_HOST.match(host):
        # "127.1", "2130706433", "0x7f.0.0.1": resolvers read these as IPv4 addresses.
        try:
            packed = socket.inet_aton(host)
        except OSError:
            raise UnsafePartnerURL("numeric host names are not allowed") from None
        if not is_public_address(ipaddress.IPv4Address(packed)):
            raise UnsafePartnerURL("the URL points at a non-public address")
        raise UnsafePartnerURL("write IPv4 addresses in dotted-quad form")
    if host in _BLOCKED_HOSTS or host.endswith(_BLOCKED_HOST_SUFFIXES) or "." not in host:
        raise UnsafePartnerURL("the URL points at a local host name")
    return url


# --- loading -----------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


class DirectoryError(ValueError):
    """A directory file that does not validate. ``errors`` name partner and field path."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.errors = errors
        super().__init__(f"{source}: " + "; ".join(errors))


Location = tuple[int | str, ...]


def _expand(value: Any, env: Mapping[str, str], where: Location, missing: list[EntryErr]) -> Any:
    """``value`` with ``${VAR}`` placeholders replaced from ``env``; each placeholder that
    ``env`` lacks is added to ``missing`` with its path (its name is the file's own text,
    an identifier by the pattern, never a value)."""
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                missing.append((where, f"${{{name}}} is not set"))
                return ""
            return env[name]

        return _PLACEHOLDER.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand(v, env, (*where, k), missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, env, (*where, i), missing) for i, v in enumerate(value)]
    return value


def _loc(loc: Location) -> str:
    return ".".join(str(p) for p in loc) or "(root)"


#: One entry's problem: (entry index, the entry's id when it is a valid id, field path,
#: message). Never a value: a directory may carry secrets.
EntryError = tuple[int, str | None, Location, str]
#: A problem within one entry: (field path, message).
EntryErr = tuple[Location, str]


def _safe_id(raw: Any) -> str | None:
    pid = raw.get("id") if isinstance(raw, dict) else None
    return pid if isinstance(pid, str) and len(pid) <= 64 and _PARTNER_ID.match(pid) else None


def _validate_entries(
    entries: list[Any], *, relaxed: bool, env: Mapping[str, str]
) -> tuple[list[Partner], list[EntryError]]:
    """Validate each entry as a :class:`Partner` (placeholders expanded, URL policy
    applied); the valid partners, and every problem found."""
    errors: list[EntryError] = []
    partners: list[Partner] = []
    for index, raw in enumerate(entries):
        pid = _safe_id(raw)
        missing: list[EntryErr] = []
        expanded = _expand(raw, env, (), missing)
        errors.extend((index, pid, loc, message) for loc, message in missing)
        try:
            partner = Partner.model_validate(expanded)
        except ValidationError as exc:
            errors.extend((index, pid, tuple(e["loc"]), e["msg"]) for e in exc.errors())
            continue
        try:
            if partner.endpoint.url is not None:
                check_partner_url(partner.endpoint.url, relaxed=relaxed)
        except UnsafePartnerURL as exc:
            errors.append((index, pid, ("endpoint", "url"), str(exc)))
            continue
        partners.append(partner)
    return partners, errors


def _directory(partners: list[Partner], version: Any, source: str) -> Directory:
    try:
        return Directory(version=version, partners=tuple(partners))
    except ValidationError as exc:
        errors = [f"{_loc(tuple(e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise DirectoryError(source, errors) from None


def parse_directory(
    document: Any, *, relaxed: bool, env: Mapping[str, str] | None = None, source: str = "directory"
) -> Directory:
    """Validate a parsed directory document; see :func:`load_directory`."""
    if not isinstance(document, dict) or not isinstance(document.get("partners"), list):
        raise DirectoryError(source, ["the file needs a top-level `partners` list"])
    environment = dict(os.environ if env is None else env)
    partners, problems = _validate_entries(document["partners"], relaxed=relaxed, env=environment)
    errors = [
        f"partners[{index}]" + (f" (id={pid})" if pid else "") + f": {_loc(loc)}: {message}"
        for index, pid, loc, message in problems
    ]
    extra = set(document) - {"version", "partners"}
    if extra:
        errors.append(f"unknown top-level keys: {', '.join(sorted(extra))}")
    if errors:
        raise DirectoryError(source, errors)
    return _directory(partners, document.get("version", 1), source)


# --- CSV: a directory kept in a spreadsheet ------------------------------------------------

#: The columns of a CSV directory, and where each goes in a directory entry. Lists (services,
#: regions, ubigeo_prefixes, sexes, languages) are separated by ``;`` or ``,``; ``schedule``
#: is ``DAYS HH:MM-HH:MM`` slots separated by ``;`` (DAYS: ``mon-fri``, ``sat``,
#: ``mon,wed``); an empty cell takes the default. docs/partners.md describes them.
CSV_COLUMNS: dict[str, Location] = {
    "id": ("id",),
    "organisation_id": ("organisation", "id"),
    "organisation_name": ("organisation", "name"),
    "name": ("name",),
    "role": ("role",),
    "description": ("description",),
    "services": ("services",),
    "national": ("service_area", "national"),
    "regions": ("service_area", "regions"),
    "ubigeo_prefixes": ("service_area", "ubigeo_prefixes"),
    "min_age": ("eligibility", "min_age"),
    "max_age": ("eligibility", "max_age"),
    "sexes": ("eligibility", "sexes"),
    "languages": ("languages",),
    "capacity_available": ("capacity", "available"),
    "capacity_maximum": ("capacity", "maximum"),
    "timezone": ("hours", "timezone"),
    "always_open": ("hours", "always_open"),
    "schedule": ("hours", "schedule"),
    "endpoint_url": ("endpoint", "url"),
    "endpoint_format": ("endpoint", "format"),
    "endpoint_thin": ("endpoint", "thin"),
    "endpoint_secret": ("endpoint", "secrets"),
    "status": ("status",),
    "priority": ("priority",),
}
#: Where csv puts the cells of a row beyond the header's columns.
_EXTRA_CELLS = "\x00extra"
_CSV_LISTS = frozenset({"services", "regions", "ubigeo_prefixes", "sexes", "languages"})
_CSV_BOOLEANS = frozenset({"national", "always_open", "endpoint_thin"})
_TRUE = frozenset({"true", "yes", "y", "1", "si", "sí", "x"})
_FALSE = frozenset({"false", "no", "n", "0"})
#: Model-level errors, named by the columns that make them up.
_CSV_GROUPS: dict[Location, str] = {
    ("service_area",): "national/regions/ubigeo_prefixes",
    ("eligibility",): "min_age/max_age",
    ("capacity",): "capacity_available/capacity_maximum",
    ("hours",): "always_open/schedule",
    ("organisation",): "organisation_id/organisation_name",
    ("endpoint",): "endpoint_url",
    (): "role/services",
}
_SLOT = re.compile(
    r"^\s*(?P<days>[a-z, +-]+?)\s+(?P<opens>\d{1,2}:\d{2})\s*-\s*(?P<closes>\d{1,2}:\d{2})\s*$"
)


def _csv_days(text: str) -> list[str]:
    days: list[str] = []
    for part in re.split(r"[,+]", text):
        first, _, last = part.strip().partition("-")
        if first not in WEEKDAYS or (last and last not in WEEKDAYS):
            raise ValueError
        start = WEEKDAYS.index(Weekday(first))
        end = WEEKDAYS.index(Weekday(last)) if last else start
        if end < start:
            raise ValueError
        days += [d.value for d in WEEKDAYS[start : end + 1]]
    return days


def _csv_cell(column: str, text: str) -> Any:
    """A cell as the directory entry holds it; ValueError with a message that quotes
    nothing when the cell is not what its column needs."""
    if column in _CSV_LISTS:
        return [item.strip() for item in re.split(r"[;,]", text) if item.strip()]
    if column in _CSV_BOOLEANS:
        word = text.strip().lower()
        if word not in _TRUE | _FALSE:
            raise ValueError("expected true or false (yes/no, sí/no, 1/0)")
        return word in _TRUE
    if column == "endpoint_secret":
        return [text.strip()]
    if column == "schedule":
        slots = []
        for slot in filter(str.strip, text.split(";")):
            found = _SLOT.match(slot.lower())
            try:
                if found is None:
                    raise ValueError
                days = _csv_days(found["days"])
            except ValueError:
                raise ValueError(
                    "expected slots like `mon-fri 08:00-17:00; sat 09:00-12:00`"
                ) from None
            slots.append({"days": days, "opens": found["opens"], "closes": found["closes"]})
        return slots
    return text.strip()


def _csv_entry(row: dict[str, str]) -> tuple[dict[str, Any], list[EntryErr]]:
    """One row as a directory entry (cells left empty are left out)."""
    entry: dict[str, Any] = {}
    problems: list[EntryErr] = []
    for column, where in CSV_COLUMNS.items():
        text = row.get(column) or ""
        if not text.strip():
            continue
        try:
            value = _csv_cell(column, text)
        except ValueError as exc:
            problems.append((where, str(exc)))
            continue
        node = entry
        for key in where[:-1]:
            node = node.setdefault(str(key), {})
        node[str(where[-1])] = value
    return entry, problems


def _csv_column(loc: Location) -> str:
    """The column a field path came from (the longest mapped prefix)."""
    for column, where in CSV_COLUMNS.items():
        if loc[: len(where)] == where:
            return column
    for prefix in sorted(_CSV_GROUPS, key=len, reverse=True):
        if loc[: len(prefix)] == prefix and (prefix or not loc):
            return _CSV_GROUPS[prefix]
    return "(row)"


def parse_directory_csv(
    text: str, *, relaxed: bool, env: Mapping[str, str] | None = None, source: str = "directory"
) -> Directory:
    """Validate a CSV directory: one partner a row, a header row naming the columns of
    :data:`CSV_COLUMNS`. Validated as the YAML directory is; every error names the
    spreadsheet row and the column, never a value."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")), restkey=_EXTRA_CELLS)
    header = reader.fieldnames or []
    errors: list[str] = []
    unknown = [i + 1 for i, name in enumerate(header) if name.strip() not in CSV_COLUMNS]
    if unknown:
        errors.append(
            "header: column(s) " + ", ".join(map(str, unknown)) + " are not directory columns"
            " (see docs/partners.md)"
        )
    if "id" not in header or "role" not in header:
        errors.append("header: the columns id and role are required")
    if errors:
        raise DirectoryError(source, errors)
    rows: list[dict[str, Any]] = []
    cell_errors: list[EntryError] = []
    try:
        for index, row in enumerate(reader):
            if _EXTRA_CELLS in row:
                cell_errors.append((index, None, ("",), "more cells than the header has columns"))
            entry, problems = _csv_entry(
                {k.strip(): v for k, v in row.items() if k != _EXTRA_CELLS}
            )
            cell_errors += [(index, _safe_id(entry), loc, msg) for loc, msg in problems]
            rows.append(entry)
    except csv.Error:
        raise DirectoryError(source, [f"row {reader.line_num}: not valid CSV"]) from None
    environment = dict(os.environ if env is None else env)
    partners, invalid = _validate_entries(rows, relaxed=relaxed, env=environment)
    # A cell that could not be read is reported once, not again as a missing field.
    unreadable = {(index, _csv_column(loc)) for index, _, loc, _ in cell_errors}
    found = cell_errors + [p for p in invalid if (p[0], _csv_column(p[2])) not in unreadable]
    for index, pid, loc, message in sorted(found, key=lambda p: p[0]):
        label = f"row {index + 2}" + (f" (id={pid})" if pid else "")
        errors.append(f"{label}, column {_csv_column(loc)}: {message}")
    if errors:
        raise DirectoryError(source, errors)
    return _directory(partners, 1, source)


def load_directory(path: Path, *, relaxed: bool, env: Mapping[str, str] | None = None) -> Directory:
    """Load a YAML, JSON or CSV directory file; ``${VAR}`` placeholders come from ``env``.

    Secrets belong in the environment, referenced as ``${PARTNER_X_SECRET}``, not in the file.
    """
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        return parse_directory_csv(text, relaxed=relaxed, env=env, source=str(path))
    try:
        document = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise DirectoryError(str(path), [f"not valid YAML/JSON{where}"]) from None
    return parse_directory(document, relaxed=relaxed, env=env, source=str(path))


DEMO_DIRECTORY = Path(__file__).parent / "demo" / "directory.yaml"


def directory_env(public_base_url: str) -> dict[str, str]:
    """The environment placeholders expand from, with the service's own public URL."""
    env = dict(os.environ)
    env["RUTA_PUBLIC_BASE_URL"] = public_base_url.rstrip("/")
    return env
