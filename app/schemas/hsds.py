"""The partner directory as Open Referral HSDS 3 objects (``GET /v1/services``).

A Ruta partner entry is an HSDS ``service`` offered by an ``organization``. HSDS ids are
UUIDs: Ruta derives them from its own ids (the same entry always has the same UUID), and
keeps its own ids where HSDS has room for them: the organisation's in
``organization.identifiers``, the partner's, its role and its service categories in
``attributes`` (HSDS's way to classify a service with taxonomy terms). Ruta has no
locations: where a service is offered is its ``service_areas``.
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.outcome import Timestamp


class Hsds(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaxonomyTerm(Hsds):
    id: UUID
    code: str
    name: str
    description: str
    taxonomy: str = Field(description="Ruta's taxonomies: `ruta_partner_role`, …")


class Attribute(Hsds):
    id: UUID
    link_id: UUID
    link_type: str
    link_entity: Literal["service"]
    value: str | None = None
    label: str | None = None
    taxonomy_term: TaxonomyTerm


class OrganizationIdentifier(Hsds):
    id: UUID
    identifier_scheme: str | None = None
    identifier_type: str
    identifier: str


class Organization(Hsds):
    id: UUID
    name: str
    description: str
    identifiers: list[OrganizationIdentifier]


class ServiceAreaOut(Hsds):
    """HSDS ``service_area``: a department, an ubigeo prefix, or the whole country."""

    id: UUID
    service_id: UUID
    name: str
    description: str
    extent_type: str | None = None
    extent: str | None = None


class LanguageOut(Hsds):
    id: UUID
    service_id: UUID
    code: str = Field(description="ISO 639 code.")


class Schedule(Hsds):
    """HSDS ``schedule`` (RFC 5545 terms): weekly, on ``byday``, from ``opens_at`` to
    ``closes_at`` with the UTC offset the partner's time zone has now."""

    id: UUID
    service_id: UUID
    freq: Literal["WEEKLY"]
    byday: str
    opens_at: str | None = None
    closes_at: str | None = None
    timezone: float | None = Field(default=None, description="UTC offset in hours, now.")
    description: str


class Unit(Hsds):
    id: UUID
    name: str


class ServiceCapacity(Hsds):
    id: UUID
    unit: Unit
    available: int
    maximum: int | None = None
    description: str
    updated: Timestamp | None = None


class HsdsService(Hsds):
    id: UUID
    organization_id: UUID
    name: str
    description: str | None = None
    status: Literal["active", "inactive"] = Field(
        description="`inactive` while an admin has paused the partner."
    )
    eligibility_description: str
    minimum_age: int | None = None
    maximum_age: int | None = None
    languages: list[LanguageOut]
    service_areas: list[ServiceAreaOut]
    schedules: list[Schedule]
    capacities: list[ServiceCapacity]
    attributes: list[Attribute]
    organization: Organization


class ServicePage(Hsds):
    """HSDS API 3 ``Page`` of services."""

    total_items: int
    total_pages: int
    page_number: int
    size: int
    first_page: bool
    last_page: bool
    empty: bool
    contents: list[HsdsService]
