"""The partner directory in the database: sync from the file, admin changes, secrets.

Precedence between the directory file and runtime changes
---------------------------------------------------------
* The **file defines** the partners it lists: organisation, services, service area,
  eligibility, languages, hours, endpoint URL and format, thin mode, priority and maximum
  capacity. A sync at start creates missing partners and updates these fields.
* **Runtime state belongs to the database** and a sync never touches it: status
  (pause/resume), available capacity (partners report it) and signing secrets (rotation).
  A file's secrets seed a partner when it is first created; after that rotate via the API.
* **An admin's runtime change wins over the file.** A field changed with ``PATCH`` is
  recorded in ``overridden``; later syncs leave it alone and report it in
  :class:`SyncReport.kept_overrides`, so a difference is visible, never silently lost.
* Partners created through the API, and partners no longer in the file, are never deleted
  by a sync; the latter are reported in ``not_in_file`` (pause them if they should stop).

Services only ``flush()``; the caller's session commits.
"""

from __future__ import annotations

import base64
import json
import secrets as secrets_module
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import audit
from app.audit import Action
from app.auth import Principal
from app.crypto import decrypt_field, encrypt_field
from app.errors import Conflict, NotFound
from app.models import PartnerRow
from app.partners.directory import (
    DEMO_DIRECTORY,
    SECRET_PREFIX,
    Capacity,
    Directory,
    Eligibility,
    Endpoint,
    Hours,
    Organisation,
    Partner,
    PartnerStatus,
    PayloadFormat,
    ServiceArea,
    directory_env,
    load_directory,
)
from app.schemas.decision import PartnerRole
from app.schemas.screening import Language, ServiceCategory
from app.settings import Environment, Settings

log = structlog.get_logger("ruta.partners")

#: The fields a file sync owns (unless an admin overrode them).
FILE_FIELDS = (
    "organisation",
    "name",
    "role",
    "description",
    "services",
    "service_area",
    "eligibility",
    "languages",
    "hours",
    "endpoint.url",
    "endpoint.format",
    "endpoint.thin",
    "priority",
    "capacity.maximum",
)
DEFAULT_OVERLAP = timedelta(hours=24)


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets_module.token_bytes(32)).decode()


# --- secrets ------------------------------------------------------------------------------


def _seal_secrets(settings: Settings, partner_id: str, entries: list[dict[str, Any]]) -> bytes:
    return encrypt_field(
        settings.kek_bytes(),
        json.dumps(entries).encode(),
        table="partners",
        column="secrets_ct",
        row_id=partner_id,
    )


def _open_secrets(settings: Settings, row: PartnerRow) -> list[dict[str, Any]]:
    if row.secrets_ct is None:
        return []
    plain = decrypt_field(
        settings.kek_bytes(), row.secrets_ct, table="partners", column="secrets_ct", row_id=row.id
    )
    entries: list[dict[str, Any]] = json.loads(plain)
    return entries


def signing_secrets(settings: Settings, row: PartnerRow, now: datetime) -> list[str]:
    """The partner's secrets valid at ``now``, newest first. The delivery worker signs with
    every one (Standard Webhooks allows several signatures), so a partner mid-rotation
    verifies with either its old or its new secret."""
    valid = [
        e
        for e in _open_secrets(settings, row)
        if e.get("expires_at") is None or datetime.fromisoformat(e["expires_at"]) > now
    ]
    valid.sort(key=lambda e: str(e["created_at"]), reverse=True)
    return [str(e["secret"]) for e in valid]


def _set_secrets(settings: Settings, row: PartnerRow, values: Sequence[str], now: datetime) -> None:
    entries = [{"secret": s, "created_at": now.isoformat(), "expires_at": None} for s in values]
    row.secrets_ct = _seal_secrets(settings, row.id, entries) if entries else None
    row.secret_rotated_at = now if entries else None


async def rotate_secret(
    session: AsyncSession,
    settings: Settings,
    partner_id: str,
    *,
    now: datetime,
    overlap: timedelta = DEFAULT_OVERLAP,
) -> tuple[PartnerRow, str, datetime | None]:
    """Issue a new secret; the previous ones stay valid for ``overlap``, then expire.

    Returns the row, the new secret (shown to the admin once) and when the old ones expire.
    """
    row = await get_partner(session, partner_id)
    kept = []
    old_expiry = now + overlap if overlap > timedelta(0) else None
    for entry in _open_secrets(settings, row):
        expires = entry.get("expires_at")
        if expires is not None and datetime.fromisoformat(expires) <= now:
            continue  # already expired: drop it
        if overlap <= timedelta(0):
            continue
        new_expiry = old_expiry if old_expiry is not None else now
        if expires is not None:
            new_expiry = min(datetime.fromisoformat(expires), new_expiry)
        kept.append({**entry, "expires_at": new_expiry.isoformat()})
    secret = new_secret()
    entries = [{"secret": secret, "created_at": now.isoformat(), "expires_at": None}, *kept]
    row.secrets_ct = _seal_secrets(settings, row.id, entries)
    row.secret_rotated_at = now
    row.updated_at = now
    await session.flush()
    return row, secret, old_expiry if kept else None


# --- conversion ---------------------------------------------------------------------------


class RoleMissing(ValueError):
    """A partner row from before roles existed: it receives nothing until its role is set."""


def partner_fields(row: PartnerRow) -> dict[str, Any]:
    """The row's directory fields as models (no role, no secrets): what the API shows."""
    return dict(
        id=row.id,
        organisation=Organisation(id=row.organisation_id, name=row.organisation_name),
        name=row.name,
        description=row.description,
        services=frozenset(ServiceCategory(s) for s in row.services),
        service_area=ServiceArea.model_validate(row.service_area),
        eligibility=Eligibility.model_validate(row.eligibility),
        languages=frozenset(Language(lang) for lang in row.languages),
        capacity=Capacity(
            available=row.capacity_available,
            maximum=row.capacity_maximum,
            updated_at=row.capacity_updated_at,
        ),
        hours=Hours.model_validate(row.hours),
        endpoint=Endpoint(
            url=row.endpoint_url, format=PayloadFormat(row.payload_format), thin=row.thin
        ),
        status=PartnerStatus(row.status),
        priority=row.priority,
    )


def to_partner(row: PartnerRow) -> Partner:
    """The row as the directory model matching reads; it carries no secrets. Raises
    :class:`RoleMissing` for a row without a role."""
    if row.role is None:
        raise RoleMissing(row.id)
    return Partner(role=PartnerRole(row.role), **partner_fields(row))


def _flat(partner: Partner) -> dict[str, Any]:
    """The definitional fields, keyed like FILE_FIELDS, as stored."""
    return {
        "organisation": (partner.organisation.id, partner.organisation.name),
        "name": partner.name,
        "role": partner.role.value,
        "description": partner.description,
        "services": sorted(s.value for s in partner.services),
        "service_area": partner.service_area.model_dump(mode="json"),
        "eligibility": partner.eligibility.model_dump(mode="json"),
        "languages": sorted(lang.value for lang in partner.languages),
        "hours": partner.hours.model_dump(mode="json"),
        "endpoint.url": partner.endpoint.url,
        "endpoint.format": partner.endpoint.format.value,
        "endpoint.thin": partner.endpoint.thin,
        "priority": partner.priority,
        "capacity.maximum": partner.capacity.maximum,
    }


def _apply(row: PartnerRow, key: str, value: Any) -> None:
    if key == "organisation":
        row.organisation_id, row.organisation_name = value
    elif key == "endpoint.url":
        row.endpoint_url = value
    elif key == "endpoint.format":
        row.payload_format = value
    elif key == "endpoint.thin":
        row.thin = value
    elif key == "capacity.maximum":
        row.capacity_maximum = value
        row.capacity_available = min(row.capacity_available, value)
    else:
        setattr(row, key, value)


def _current(row: PartnerRow, key: str) -> Any:
    return {
        "organisation": (row.organisation_id, row.organisation_name),
        "endpoint.url": row.endpoint_url,
        "endpoint.format": row.payload_format,
        "endpoint.thin": row.thin,
        "capacity.maximum": row.capacity_maximum,
    }.get(key, getattr(row, key, None))


def _new_row(settings: Settings, partner: Partner, *, source: str, now: datetime) -> PartnerRow:
    row = PartnerRow(
        id=partner.id,
        capacity_available=partner.capacity.available,
        capacity_maximum=partner.capacity.maximum,
        capacity_updated_at=partner.capacity.updated_at or now,
        status=partner.status.value,
        source=source,
        overridden=[],
        created_at=now,
        updated_at=now,
    )
    for key, value in _flat(partner).items():
        _apply(row, key, value)
    row.capacity_available = partner.capacity.available
    given = [s.get_secret_value() for s in partner.endpoint.secrets]
    _set_secrets(settings, row, given or [new_secret()], now)
    return row


# --- queries and changes ------------------------------------------------------------------


async def get_partner(session: AsyncSession, partner_id: str) -> PartnerRow:
    row = await session.get(PartnerRow, partner_id)
    if row is None:
        raise NotFound("No partner with this id.")
    return row


async def list_partners(
    session: AsyncSession, *, after: str | None, limit: int
) -> tuple[list[PartnerRow], str | None]:
    """A page ordered by id; returns the rows and the id to continue after, if any."""
    query = select(PartnerRow).order_by(PartnerRow.id).limit(limit + 1)
    if after is not None:
        query = query.where(PartnerRow.id > after)
    rows = list((await session.execute(query)).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more and rows else None)


async def directory_partners(session: AsyncSession) -> list[Partner]:
    """Every partner as matching reads it (paused ones included: matching explains them).

    A partner without a role (a row from before roles existed) is left out, with a warning:
    the protocol cannot tell whether it may receive anything (docs/partners.md).
    """
    rows = (await session.execute(select(PartnerRow).order_by(PartnerRow.id))).scalars()
    partners = []
    for row in rows:
        if row.role is None:
            log.warning("partner_without_role_skipped", partner_id=row.id)
            continue
        partners.append(to_partner(row))
    return partners


async def create_partner(
    session: AsyncSession, settings: Settings, partner: Partner, *, now: datetime
) -> PartnerRow:
    if await session.get(PartnerRow, partner.id) is not None:
        raise Conflict("A partner with this id exists.")
    row = _new_row(settings, partner, source="api", now=now)
    session.add(row)
    await session.flush()
    return row


async def update_partner(
    session: AsyncSession, partner_id: str, changes: dict[str, Any], *, now: datetime
) -> PartnerRow:
    """Apply validated changes keyed like FILE_FIELDS (plus ``status``, ``capacity.available``).

    On a file-sourced partner each definitional field changed is marked overridden.
    """
    row = await get_partner(session, partner_id)
    overridden = set(row.overridden or [])
    for key, value in changes.items():
        if key == "status":
            row.status = value
        elif key == "capacity.available":
            if value > row.capacity_maximum:
                raise Conflict("capacity.available exceeds capacity.maximum.")
            row.capacity_available = value
            row.capacity_updated_at = now
        else:
            _apply(row, key, value)
            if row.source == "file":
                overridden.add(key)
    if row.capacity_available > row.capacity_maximum:
        raise Conflict("capacity.available exceeds capacity.maximum.")
    if row.role is not None:
        try:
            to_partner(row)  # the directory's rules hold for the result as a whole
        except ValidationError as exc:
            raise Conflict(
                "The change leaves the partner inconsistent.",
                errors=[str(e["msg"]) for e in exc.errors()],
            ) from None
    row.overridden = sorted(overridden)
    row.updated_at = now
    await session.flush()
    return row


async def set_status(
    session: AsyncSession, partner_id: str, status: PartnerStatus, *, now: datetime
) -> PartnerRow:
    row = await get_partner(session, partner_id)
    row.status = status.value
    row.updated_at = now
    await session.flush()
    return row


async def organisation_partners(session: AsyncSession, organisation_id: str) -> list[PartnerRow]:
    """An organisation's partners, by the organisation's **id** (what a partner client's
    organisation names)."""
    query = select(PartnerRow).where(PartnerRow.organisation_id == organisation_id)
    return list((await session.execute(query.order_by(PartnerRow.id))).scalars())


async def report_capacity(
    session: AsyncSession,
    principal: Principal,
    *,
    available: int,
    partner_id: str | None,
    now: datetime,
) -> list[PartnerRow]:
    """A partner organisation reports its available capacity (for one or all its services).

    ``organisation`` is the API client's organisation; it matches a partner's organisation
    **id** only. A display name is not an identity: an admin renaming one organisation
    must never hand another organisation's partners to its clients.
    """
    assert principal.organisation is not None  # partner clients always have one
    rows = await organisation_partners(session, principal.organisation)
    if partner_id is not None:
        rows = [r for r in rows if r.id == partner_id]
    if not rows:
        raise NotFound("No partner of your organisation matches.")
    for row in rows:
        if available > row.capacity_maximum:
            raise Conflict("available exceeds the partner's maximum capacity.")
        row.capacity_available = available
        row.capacity_updated_at = now
        row.updated_at = now
        await audit.record(
            session,
            action=Action.partner_updated,
            actor=principal,
            partner_id=row.id,
            data={"target_id": row.id, "changed": ["capacity"]},
        )
    await session.flush()
    return rows


@dataclass
class SyncReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    #: "partner_id: field" pairs where an admin's runtime change was kept over the file.
    kept_overrides: list[str] = field(default_factory=list)
    not_in_file: list[str] = field(default_factory=list)


async def sync_directory(
    session: AsyncSession, settings: Settings, directory: Directory, *, now: datetime
) -> SyncReport:
    """Upsert the file's partners (see the module docstring for precedence)."""
    report = SyncReport()
    existing = {r.id: r for r in (await session.execute(select(PartnerRow))).scalars()}
    for partner in directory.partners:
        row = existing.get(partner.id)
        if row is None:
            session.add(_new_row(settings, partner, source="file", now=now))
            report.created.append(partner.id)
            continue
        overridden = set(row.overridden or [])
        changed = False
        for key, value in _flat(partner).items():
            if _current(row, key) == value:
                continue
            if key in overridden:
                report.kept_overrides.append(f"{partner.id}: {key}")
                continue
            _apply(row, key, value)
            changed = True
        if row.secrets_ct is None and partner.endpoint.secrets:
            _set_secrets(
                settings, row, [s.get_secret_value() for s in partner.endpoint.secrets], now
            )
            changed = True
        if changed:
            row.updated_at = now
            report.updated.append(partner.id)
        else:
            report.unchanged.append(partner.id)
    in_file = {p.id for p in directory.partners}
    report.not_in_file = sorted(
        pid for pid, row in existing.items() if pid not in in_file and row.source == "file"
    )
    await session.flush()
    return report


def directory_path(settings: Settings) -> Path | None:
    """``RUTA_PARTNERS_PATH``; else the demo directory in development; else none (the
    directory then lives only in the database, managed through the admin API)."""
    if settings.partners_path is not None:
        return settings.partners_path
    if settings.env is Environment.development:
        return DEMO_DIRECTORY
    return None


async def load_and_sync(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, *, now: datetime
) -> SyncReport | None:
    """At start: load and validate the directory file, then sync it in one transaction.

    A file that does not validate raises :class:`DirectoryError` and the service must not
    start: routing against a half-read directory could send a person to the wrong place.
    """
    path = directory_path(settings)
    if path is None:
        return None
    directory = load_directory(
        path, relaxed=settings.relaxed_network, env=directory_env(settings.public_base_url)
    )
    for attempt in range(3):
        try:
            async with sessionmaker() as session:
                report = await sync_directory(session, settings, directory, now=now)
                await session.commit()
            break
        except IntegrityError:
            # Another replica starting at the same moment inserted the same partner first;
            # sync again against what it wrote.
            if attempt == 2:
                raise
    log.info(
        "partner_directory_synced",
        path=str(path),
        created=len(report.created),
        updated=len(report.updated),
        unchanged=len(report.unchanged),
        kept_overrides=report.kept_overrides,
        not_in_file=report.not_in_file,
    )
    return report
