"""The directory as Open Referral HSDS 3 services (app/schemas/hsds.py): a read view for
admins and auditors, and for tools that speak HSDS. Nothing here is written back: the
directory file and the admin API stay the only ways to change a partner."""

from __future__ import annotations

import math
import uuid
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import PartnerRow
from app.partners.directory import DirectoryStatus, OpeningHours, Partner
from app.partners.service import partner_fields
from app.schemas import hsds
from app.schemas.decision import PartnerRole
from app.schemas.screening import UBIGEO_DEPARTMENTS

#: Derives HSDS UUIDs from Ruta's ids: the same entry always gets the same UUIDs.
_NAMESPACE = uuid.UUID("3b0c6f0e-52a4-4b0e-8f0c-1f2a8d6c9e41")
#: RFC 5545 day codes.
_BYDAY = {"mon": "MO", "tue": "TU", "wed": "WE", "thu": "TH", "fri": "FR", "sat": "SA", "sun": "SU"}
_ROLE_NAMES = {
    PartnerRole.child_protection_authority: "Child-protection authority",
    PartnerRole.law_enforcement: "Law enforcement",
    PartnerRole.shelter: "Shelter",
    PartnerRole.health_facility: "Health facility",
    PartnerRole.legal_aid: "Legal aid",
    PartnerRole.psychosocial: "Psychosocial support",
    PartnerRole.notification_recipient: "Notification recipient (non-identifying only)",
}


def _id(*parts: str) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, "/".join(parts))


def _attribute(service_id: uuid.UUID, taxonomy: str, code: str, name: str) -> hsds.Attribute:
    return hsds.Attribute(
        id=_id(str(service_id), taxonomy, code),
        link_id=service_id,
        link_type=taxonomy,
        link_entity="service",
        value=code,
        label=name,
        taxonomy_term=hsds.TaxonomyTerm(
            id=_id("taxonomy", taxonomy, code),
            code=code,
            name=name,
            description=f"{taxonomy}: {name}",
            taxonomy=taxonomy,
        ),
    )


def _areas(partner: Partner, service_id: uuid.UUID) -> list[hsds.ServiceAreaOut]:
    area = partner.service_area
    named: list[tuple[str, str, str]] = []
    if area.national:
        named.append(("national", "Peru", "The whole country"))
    named += [
        (f"region:{r.value}", r.value, "Department (region) of Peru") for r in sorted(area.regions)
    ]
    for prefix in sorted(area.ubigeo_prefixes):
        level = {2: "department", 4: "province", 6: "district"}[len(prefix)]
        department = UBIGEO_DEPARTMENTS.get(prefix[:2])
        where = f" in {department.value}" if department else ""
        named.append((f"ubigeo:{prefix}", prefix, f"Ubigeo {level} {prefix}{where}"))
    return [
        hsds.ServiceAreaOut(
            id=_id(str(service_id), key),
            service_id=service_id,
            name=name,
            description=description,
            extent_type="ubigeo" if key.startswith("ubigeo:") else None,
            extent=name if key.startswith("ubigeo:") else None,
        )
        for key, name, description in named
    ]


def _offset(timezone: str, now: datetime) -> tuple[float, str]:
    delta = now.astimezone(ZoneInfo(timezone)).utcoffset()
    minutes = int(delta.total_seconds() // 60) if delta is not None else 0
    sign = "+" if minutes >= 0 else "-"
    return minutes / 60, f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _schedules(partner: Partner, service_id: uuid.UUID, now: datetime) -> list[hsds.Schedule]:
    hours = partner.hours
    offset, suffix = _offset(hours.timezone, now)
    if hours.always_open:
        return [
            hsds.Schedule(
                id=_id(str(service_id), "always"),
                service_id=service_id,
                freq="WEEKLY",
                byday=",".join(_BYDAY.values()),
                description="Always open (24 hours, every day).",
            )
        ]

    def slot(index: int, item: OpeningHours) -> hsds.Schedule:
        return hsds.Schedule(
            id=_id(str(service_id), "schedule", str(index)),
            service_id=service_id,
            freq="WEEKLY",
            byday=",".join(_BYDAY[d.value] for d in sorted(item.days, key=list(_BYDAY).index)),
            opens_at=item.opens.strftime("%H:%M") + suffix,
            closes_at=item.closes.strftime("%H:%M") + suffix,
            timezone=offset,
            description=f"Times in {hours.timezone}.",
        )

    return [slot(i, item) for i, item in enumerate(hours.schedule)]


def _eligibility(partner: Partner) -> str:
    rule = partner.eligibility
    low, high = rule.min_age, rule.max_age
    ages = (
        "Any age"
        if low is None and high is None
        else f"Ages {low if low is not None else 0} to {high if high is not None else 'any'}"
    )
    sexes = ", ".join(sorted(s.value for s in rule.sexes)) if rule.sexes else "any sex"
    return f"{ages}; {sexes}."


def to_service(partner: Partner, role: PartnerRole | None, now: datetime) -> hsds.HsdsService:
    """One directory entry as an HSDS service."""
    service_id = _id("partner", partner.id)
    organization_id = _id("organisation", partner.organisation.id)
    attributes = [_attribute(service_id, "ruta_partner_id", partner.id, partner.id)]
    if role is not None:  # a partner stored before roles existed has none yet
        attributes.append(
            _attribute(service_id, "ruta_partner_role", role.value, _ROLE_NAMES[role])
        )
    attributes += [
        _attribute(service_id, "ruta_service_category", s.value, s.value.capitalize())
        for s in sorted(partner.services)
    ]
    attributes += [
        _attribute(service_id, "ruta_eligible_sex", s.value, s.value)
        for s in sorted(partner.eligibility.sexes)
    ]
    capacity = partner.capacity
    return hsds.HsdsService(
        id=service_id,
        organization_id=organization_id,
        name=partner.name,
        description=partner.description,
        status="active" if partner.status is DirectoryStatus.active else "inactive",
        eligibility_description=_eligibility(partner),
        minimum_age=partner.eligibility.min_age,
        maximum_age=partner.eligibility.max_age,
        languages=[
            hsds.LanguageOut(
                id=_id(str(service_id), "language", lang.value),
                service_id=service_id,
                code=lang.value,
            )
            for lang in sorted(partner.languages)
        ],
        service_areas=_areas(partner, service_id),
        schedules=_schedules(partner, service_id, now),
        capacities=[
            hsds.ServiceCapacity(
                id=_id(str(service_id), "capacity"),
                unit=hsds.Unit(id=_id("unit", "referral"), name="new referrals"),
                available=capacity.available,
                maximum=capacity.maximum,
                description="New referrals the partner can take now (it reports them).",
                updated=capacity.updated_at.isoformat() if capacity.updated_at else None,
            )
        ],
        attributes=attributes,
        organization=hsds.Organization(
            id=organization_id,
            name=partner.organisation.name,
            description=partner.organisation.name,
            identifiers=[
                hsds.OrganizationIdentifier(
                    id=_id("organisation", partner.organisation.id, "ruta"),
                    identifier_scheme="ruta",
                    identifier_type="ruta_organisation_id",
                    identifier=partner.organisation.id,
                )
            ],
        ),
    )


async def service_page(
    session: AsyncSession, *, page: int, per_page: int, now: datetime
) -> hsds.ServicePage:
    """One HSDS page of the directory, ordered by partner id (``page`` counts from 1)."""
    total = (await session.execute(select(func.count()).select_from(PartnerRow))).scalar_one()
    rows = (
        await session.execute(
            select(PartnerRow).order_by(PartnerRow.id).offset((page - 1) * per_page).limit(per_page)
        )
    ).scalars()
    contents = [
        to_service(
            Partner.model_construct(**partner_fields(row)),
            PartnerRole(row.role) if row.role is not None else None,
            now,
        )
        for row in rows
    ]
    pages = max(1, math.ceil(total / per_page))
    return hsds.ServicePage(
        total_items=total,
        total_pages=pages,
        page_number=page,
        size=len(contents),
        first_page=page == 1,
        last_page=page >= pages,
        empty=not contents,
        contents=contents,
    )
