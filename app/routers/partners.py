"""The partner directory over HTTP: admins manage it; partners report their capacity.

No response carries a signing secret, except ``POST …/secrets/rotate``, which returns the
new one exactly once.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime, timedelta
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Body, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from app import audit
from app.audit import Action
from app.auth import Principal
from app.deps import AdminDep, PartnerDep, SessionDep, SettingsDep
from app.errors import BadRequest, ValidationFailed, field_error
from app.models import PartnerRow
from app.models.base import utcnow
from app.observability import actor_fields, log_on_commit
from app.openapi import ok, problem, responses
from app.partners import service
from app.partners.directory import (
    Capacity,
    Eligibility,
    Hours,
    Organisation,
    Partner,
    PartnerStatus,
    PayloadFormat,
    ServiceArea,
    UnsafePartnerURL,
    check_partner_url,
)
from app.schemas import examples
from app.schemas.decision import PartnerRole
from app.schemas.screening import Language, ServiceCategory, SortedSets, Strict

router = APIRouter(prefix="/v1/partners", tags=["partners"], responses=responses(404, 409))
log = structlog.get_logger("ruta.partners")

RESPONSES: dict[int | str, dict[str, Any]] = {
    401: problem("No or invalid API key"),
    403: problem("Not an admin"),
    404: problem("No such partner"),
    422: problem("Invalid; `errors` names each field path"),
}


class EndpointOut(BaseModel):
    url: str | None = Field(
        description="Null for a console-only partner: its referrals wait in its console inbox."
    )
    format: PayloadFormat
    thin: bool
    has_signing_secret: bool
    secret_rotated_at: datetime | None


class PartnerOut(BaseModel):
    """A partner as the API shows it. There is deliberately no field for secrets."""

    id: str
    organisation: Organisation
    name: str
    role: PartnerRole | None = Field(
        description="What kind of organisation it is (see docs/partners.md). Null only for a "
        "partner registered before roles existed: it receives nothing until an admin sets it."
    )
    description: str | None
    services: list[ServiceCategory]
    service_area: ServiceArea
    eligibility: Eligibility
    languages: list[Language]
    capacity: Capacity
    hours: Hours
    endpoint: EndpointOut
    status: PartnerStatus
    priority: int
    source: str = Field(description="`file` (the directory file) or `api`.")
    overridden: list[str] = Field(
        description="Fields an admin changed at runtime; file syncs leave them alone."
    )
    created_at: datetime
    updated_at: datetime


class PartnerPage(BaseModel):
    items: list[PartnerOut]
    next_cursor: str | None


class EndpointPatch(Strict):
    url: str | None = Field(default=None, min_length=8, max_length=2000)
    format: PayloadFormat | None = None
    thin: bool | None = None


class CapacityPatch(Strict):
    available: int | None = Field(default=None, ge=0, le=100_000)
    maximum: int | None = Field(default=None, ge=0, le=100_000)


class PartnerPatch(SortedSets):
    """Only the fields given change. Secrets cannot be set here: rotate them."""

    model_config = ConfigDict(json_schema_extra={"examples": [examples.PARTNER_PATCH]})

    organisation: Organisation | None = None
    name: str | None = Field(default=None, min_length=1, max_length=200)
    role: PartnerRole | None = None
    description: str | None = Field(default=None, max_length=1000)
    services: frozenset[ServiceCategory] | None = Field(default=None, min_length=1)
    service_area: ServiceArea | None = None
    eligibility: Eligibility | None = None
    languages: frozenset[Language] | None = Field(default=None, min_length=1)
    hours: Hours | None = None
    endpoint: EndpointPatch | None = None
    capacity: CapacityPatch | None = None
    status: PartnerStatus | None = None
    priority: int | None = Field(default=None, ge=0, le=10_000)


class RotatedSecret(BaseModel):
    model_config = ConfigDict(json_schema_extra={"description": "Shown once; store it now."})

    partner_id: str
    secret: str = Field(description="The new `whsec_…` secret. It is not shown again.")
    rotated_at: datetime
    previous_valid_until: datetime | None = Field(
        description="Until when the previous secret(s) still verify (the overlap window)."
    )


class CapacityReport(Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [examples.CAPACITY_REPORT]})

    available: int = Field(ge=0, le=100_000)
    partner_id: str | None = Field(
        default=None, description="One of your organisation's partners; default: all of them."
    )


def partner_out(row: PartnerRow) -> PartnerOut:
    fields = service.partner_fields(row)
    return PartnerOut(
        id=row.id,
        organisation=fields["organisation"],
        name=row.name,
        role=PartnerRole(row.role) if row.role is not None else None,
        description=row.description,
        services=sorted(fields["services"]),
        service_area=fields["service_area"],
        eligibility=fields["eligibility"],
        languages=sorted(fields["languages"]),
        capacity=fields["capacity"],
        hours=fields["hours"],
        endpoint=EndpointOut(
            url=row.endpoint_url,
            format=PayloadFormat(row.payload_format),
            thin=row.thin,
            has_signing_secret=row.secrets_ct is not None,
            secret_rotated_at=row.secret_rotated_at,
        ),
        status=fields["status"],
        priority=row.priority,
        source=row.source,
        overridden=list(row.overridden or []),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _url_policy(url: str, relaxed: bool) -> None:
    try:
        check_partner_url(url, relaxed=relaxed)
    except UnsafePartnerURL as exc:
        raise ValidationFailed([field_error(("endpoint", "url"), str(exc), "url_policy")]) from None


_CURSOR_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


def _encode_cursor(partner_id: str) -> str:
    return base64.urlsafe_b64encode(partner_id.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        after = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadRequest("The cursor is not valid.") from None
    if not _CURSOR_ID.match(after):
        raise BadRequest("The cursor is not valid.")
    return after


@router.get(
    "",
    response_model=PartnerPage,
    summary="List partners",
    description="For admins: the partner directory, ordered by id, `limit` per page; pass "
    "`next_cursor` back as `cursor` until it is null. Shows what matching uses (services, "
    "area, eligibility, languages, capacity, hours, status) and whether a signing secret is "
    "set, never the secret itself.",
    responses={**RESPONSES, **ok(examples.PARTNER_PAGE, "A page of partners")},
)
async def list_partners(
    _admin: AdminDep,
    session: SessionDep,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> PartnerPage:
    after = _decode_cursor(cursor) if cursor else None
    rows, last = await service.list_partners(session, after=after, limit=limit)
    return PartnerPage(
        items=[partner_out(r) for r in rows],
        next_cursor=_encode_cursor(last) if last else None,
    )


@router.patch(
    "/me/capacity",
    response_model=list[PartnerOut],
    summary="Report your available capacity (partner role)",
    description="For partners: how many new referrals you can take now. Applies to every "
    "partner entry of your organisation, or to the one named in `partner_id`; returns the "
    "entries it changed. A partner with no capacity is passed over by matching until it "
    "reports some again. `available` may not exceed the entry's `maximum` (422).",
    responses={
        **RESPONSES,
        **ok([examples.PARTNER_OUT], "The partner entries updated"),
        403: problem("Not a partner key"),
        404: problem("`partner_id` is not one of your organisation's partners"),
    },
)
async def report_capacity(
    body: CapacityReport, principal: PartnerDep, session: SessionDep
) -> list[PartnerOut]:
    rows = await service.report_capacity(
        session,
        principal,
        available=body.available,
        partner_id=body.partner_id,
        now=utcnow(),
    )
    return [partner_out(r) for r in rows]


@router.get(
    "/{partner_id}",
    response_model=PartnerOut,
    summary="Get a partner",
    description="For admins: one directory entry as matching sees it, including `source` "
    "(`file` or `api`) and which fields an admin `overridden` at runtime (a later directory "
    "file sync leaves those alone). Never the signing secret.",
    responses={**RESPONSES, **ok(examples.PARTNER_OUT, "The partner")},
)
async def get_partner(partner_id: str, _admin: AdminDep, session: SessionDep) -> PartnerOut:
    return partner_out(await service.get_partner(session, partner_id))


async def _audit(
    session: AsyncSession,
    admin: Principal,
    action: Action,
    partner_id: str,
    data: dict[str, Any],
) -> None:
    """Every admin change to the directory is in the audit trail and, once committed, in
    the log (ids and field names only)."""
    await audit.record(
        session,
        action=action,
        actor=admin,
        partner_id=partner_id,
        data={"target_id": partner_id, **data},
    )
    log_on_commit(
        session,
        log,
        "info",
        "partner_changed",
        action=action.value,
        partner_id=partner_id,
        **data,
        **actor_fields(admin),
    )


@router.post(
    "",
    status_code=201,
    response_model=PartnerOut,
    summary="Create a partner",
    description="For admins: add a partner (Open Referral HSDS-style service, area, "
    "eligibility, languages, capacity, hours) with its webhook endpoint. The endpoint must be "
    "public `https` (loopback and private addresses are refused outside development). "
    "`endpoint.secrets` is optional and write-only; without it a random secret is generated, "
    "to be obtained with `POST /v1/partners/{id}/secrets/rotate`. The change is audited. "
    "Answers 201 with `Location`.",
    responses={
        **RESPONSES,
        **ok(examples.PARTNER_OUT, "Created", 201),
        409: problem("A partner with this id exists"),
    },
)
async def create_partner(
    body: Annotated[
        Partner,
        Body(
            openapi_examples={
                "hospital": {
                    "summary": "A regional hospital taking medical referrals",
                    "value": examples.PARTNER_IN,
                }
            }
        ),
    ],
    _admin: AdminDep,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
) -> PartnerOut:
    if body.endpoint.url is not None:
        _url_policy(body.endpoint.url, settings.relaxed_network)
    row = await service.create_partner(session, settings, body, now=utcnow())
    await _audit(
        session,
        _admin,
        Action.partner_created,
        row.id,
        {"services": sorted(s.value for s in body.services)},
    )
    response.headers["Location"] = f"/v1/partners/{row.id}"
    return partner_out(row)


@router.patch(
    "/{partner_id}",
    response_model=PartnerOut,
    summary="Update a partner",
    description="For admins: only the fields given change (`null` is refused except for "
    "`description`); nested `endpoint` and `capacity` change field by field. Changed fields "
    "are marked `overridden`, so a later sync of the directory file does not undo them. "
    "Secrets cannot be set here: rotate them. The change is audited (field names only).",
    responses={**RESPONSES, **ok(examples.PARTNER_OUT, "The partner after the change")},
)
async def update_partner(
    partner_id: str,
    body: PartnerPatch,
    _admin: AdminDep,
    session: SessionDep,
    settings: SettingsDep,
) -> PartnerOut:
    changes: dict[str, Any] = {}
    for name in body.model_fields_set:
        value = getattr(body, name)
        if value is None and name != "description":
            raise ValidationFailed([field_error((name,), "must not be null", "null")])
        if name == "organisation":
            changes["organisation"] = (value.id, value.name)
        elif name in ("services", "languages"):
            changes[name] = sorted(v.value for v in value)
        elif name in ("service_area", "eligibility", "hours"):
            changes[name] = value.model_dump(mode="json")
        elif name in ("status", "role"):
            changes[name] = value.value
        elif name == "endpoint":
            for key in value.model_fields_set:
                item = getattr(value, key)
                if item is None:
                    raise ValidationFailed(
                        [field_error(("endpoint", key), "must not be null", "null")]
                    )
                if key == "url":
                    _url_policy(item, settings.relaxed_network)
                changes[f"endpoint.{key}"] = item.value if key == "format" else item
        elif name == "capacity":
            for key in value.model_fields_set:
                item = getattr(value, key)
                if item is None:
                    raise ValidationFailed(
                        [field_error(("capacity", key), "must not be null", "null")]
                    )
                changes[f"capacity.{key}"] = item
        else:
            changes[name] = value
    row = await service.update_partner(session, partner_id, changes, now=utcnow())
    await _audit(
        session,
        _admin,
        Action.partner_updated,
        row.id,
        {"changed": sorted({key.split(".")[0] for key in changes})},
    )
    return partner_out(row)


@router.post(
    "/{partner_id}/pause",
    response_model=PartnerOut,
    summary="Pause a partner: matching passes it over until resumed",
    description="For admins: new referrals skip this partner until it is resumed; referrals "
    "it already holds are not moved. Audited.",
    responses={
        **RESPONSES,
        **ok({**examples.PARTNER_OUT, "status": "paused"}, "The paused partner"),
    },
)
async def pause_partner(partner_id: str, _admin: AdminDep, session: SessionDep) -> PartnerOut:
    row = await service.set_status(session, partner_id, PartnerStatus.paused, now=utcnow())
    await _audit(session, _admin, Action.partner_disabled, row.id, {"reason": "admin_pause"})
    return partner_out(row)


@router.post(
    "/{partner_id}/resume",
    response_model=PartnerOut,
    summary="Resume a partner",
    description="For admins: the partner is `active` again and matching considers it for new "
    "referrals. Audited.",
    responses={**RESPONSES, **ok(examples.PARTNER_OUT, "The active partner")},
)
async def resume_partner(partner_id: str, _admin: AdminDep, session: SessionDep) -> PartnerOut:
    row = await service.set_status(session, partner_id, PartnerStatus.active, now=utcnow())
    await _audit(session, _admin, Action.partner_updated, row.id, {"changed": ["status"]})
    return partner_out(row)


@router.post(
    "/{partner_id}/secrets/rotate",
    response_model=RotatedSecret,
    summary="Rotate the signing secret (returns the new secret once)",
    description="For admins. Returns the new `whsec_…` secret exactly once (`Cache-Control: "
    "no-store`): hand it to the partner over a secure channel. The previous secret keeps "
    "verifying for `overlap_hours` (default 24, at most 168), and during that window "
    "deliveries carry a signature under each secret (Standard Webhooks), so the partner can "
    "switch without losing a delivery. Audited.",
    responses={**RESPONSES, **ok(examples.ROTATED_SECRET, "The new secret, shown once")},
)
async def rotate_secret(
    partner_id: str,
    _admin: AdminDep,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    overlap_hours: Annotated[float, Query(ge=0, le=24 * 7)] = 24,
) -> RotatedSecret:
    now = utcnow()
    row, secret, previous_until = await service.rotate_secret(
        session, settings, partner_id, now=now, overlap=timedelta(hours=overlap_hours)
    )
    await _audit(session, _admin, Action.partner_updated, row.id, {"changed": ["secrets"]})
    response.headers["Cache-Control"] = "no-store"
    return RotatedSecret(
        partner_id=row.id, secret=secret, rotated_at=now, previous_valid_until=previous_until
    )
