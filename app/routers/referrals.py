from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import and_, or_, select

from app.audit import Action
from app.deps import AuditorDep, ClinicDep, PartnerDep, SessionDep, SettingsDep
from app.errors import BadRequest, NotFound
from app.models import (
    AuditEvent,
    Decision,
    Delivery,
    DeliveryAttempt,
    Referral,
    ReferralEvent,
    Screening,
)
from app.models.base import utcnow
from app.openapi import (
    FHIR_JSON,
    IsoDatetime,
    Timestamp,
    example,
    fhir_bundle_media,
    ok,
    partner_document,
    problem,
    responses,
)
from app.referrals import service, withdrawal
from app.referrals.state import PartnerStatus, RejectReason
from app.referrals.views import partner_names, referral_view
from app.schemas import examples
from app.schemas.decision import LegalBasis, Trace
from app.schemas.outcome import ReferralView, RuleSetRef
from app.schemas.screening import ServiceCategory, aware_utc
from app.schemas.webhooks import ReferralDetails
from app.services.intake import get_screening_for

router = APIRouter(tags=["referrals"], responses=responses(404, 409))


class StatusIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"status": "accepted"},
                {"status": "rejected", "reason": "no_capacity"},
                {"status": "completed"},
            ]
        },
    )

    status: PartnerStatus = Field(description="FHIR Task status.")
    reason: RejectReason | None = Field(
        default=None, description="Required with `rejected`, refused otherwise."
    )


class ReferralListItem(ReferralView):
    screening_id: uuid.UUID
    created_at: Timestamp
    region: str


class StatusReported(BaseModel):
    id: uuid.UUID
    reported: PartnerStatus


class StandingReferral(BaseModel):
    id: uuid.UUID
    service: ServiceCategory
    legal_basis: LegalBasis


class ConsentWithdrawn(BaseModel):
    revoked: list[uuid.UUID] = Field(
        description="The referrals on consent, now revoked (their partners notified)."
    )
    standing: list[StandingReferral] = Field(
        description="Referrals on child-protection duty or vital interest: they stand, and "
        "their partners are told that consent was withdrawn."
    )


class HistoryEntry(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    at: Timestamp
    from_: str | None = Field(alias="from")
    to: str
    reason: str | None
    partner_id: str | None
    actor_role: str | None


class AttemptTrail(BaseModel):
    attempt: int
    started_at: Timestamp
    latency_ms: int | None
    status_code: int | None
    outcome: str
    error: str | None


class DeliveryTrail(BaseModel):
    id: uuid.UUID
    webhook_id: str
    partner_id: str
    event_type: str
    status: str
    body_sha256: str
    replays: int
    attempts: list[AttemptTrail]


class DecisionRef(BaseModel):
    id: uuid.UUID
    rule_set: RuleSetRef
    trace: Trace = Field(description="Every rule that fired and the values it read.")


class ReferralExplanation(ReferralView):
    screening_id: uuid.UUID
    created_at: Timestamp
    tried_partners: list[str] = Field(description="Partners that rejected or timed out.")
    decision: DecisionRef
    match: dict[str, Any] | None = Field(
        description="Why this partner: criteria met, fallbacks, and who was passed over and why."
    )
    history: list[HistoryEntry]
    deliveries: list[DeliveryTrail]


class DisclosureRecipient(BaseModel):
    """Who received or read the data: a partner, or an API client by role and id."""

    model_config = ConfigDict(extra="allow")

    partner_id: str | None = None
    name: str | None = None
    actor_role: str | None = None
    actor_id: str | None = None


class Disclosure(BaseModel):
    seq: int = Field(description="The audit event's sequence number.")
    at: Timestamp
    kind: Literal["forwarded", "read"]
    recipient: DisclosureRecipient
    referral_id: uuid.UUID | None
    categories: list[str]
    fields: list[str]
    legal_basis: str | None
    purpose: str | None


class Disclosures(BaseModel):
    screening_id: uuid.UUID
    disclosures: list[Disclosure]


@router.post(
    "/v1/referrals/{referral_id}/status",
    summary="A partner reports what happened to a referral",
    description="Partners report on their own referrals with FHIR Task statuses. Allowed "
    "transitions: delivered → received/accepted/rejected; received → accepted/rejected/"
    "in-progress/on-hold; accepted, in-progress, on-hold → in-progress/on-hold/completed/"
    "failed/cancelled. `rejected` (with a reason) sends the referral to the next eligible "
    "partner, or escalates it to a person when none is left. Another partner's referral "
    "answers 404; a transition the state machine does not allow answers 409 with "
    "`current_status`. Send `reason` (no_capacity, not_eligible, out_of_area, "
    "could_not_contact, declined_by_person) with `rejected` only.",
    response_model=StatusReported,
    responses={
        **ok(examples.STATUS_REPORTED, "The status was recorded"),
        404: problem("No such referral among this partner's referrals"),
        409: problem("The transition is not allowed from the referral's current status"),
    },
)
async def report_status(
    referral_id: uuid.UUID,
    body: StatusIn,
    principal: PartnerDep,
    session: SessionDep,
    settings: SettingsDep,
) -> dict[str, Any]:
    referral = await service.report_status(
        session, settings, principal, referral_id, body.status, body.reason, now=utcnow()
    )
    # After a rejection the referral belongs to another partner: show only what this
    # partner may know.
    return {"id": str(referral.id), "reported": body.status.value}


@router.get(
    "/v1/referrals/{referral_id}/details",
    summary="Fetch a thin-mode referral's details",
    description="For partners in thin mode: the referral's need-to-know body, built by the "
    "same minimiser as a full delivery, so it holds only what your service needs (never "
    "notes, and identifying data only where the legal basis allows). Own referrals only "
    "(another partner's id answers 404); every fetch is recorded in the audit trail and in "
    "the case's disclosure list. The body is the `ruta-json/1` document described in "
    "docs/partners.md. After the person withdraws consent, a referral that rested on "
    "consent is revoked and answers **410 Gone** (no data; recorded as a refused read); a "
    "referral that stands on child-protection duty or vital interest still answers, with "
    "`referral.consent_withdrawn: true` and the header `Ruta-Consent: withdrawn; "
    "stands-on=<basis>`.",
    responses={
        200: {
            "description": "The referral's need-to-know body: `ruta-json`, or the FHIR R4 "
            "Bundle (`application/fhir+json`) for a `fhir-r4` partner",
            "model": ReferralDetails,
            "content": {
                "application/json": {"example": example(examples.REFERRAL_DETAILS)},
                FHIR_JSON: fhir_bundle_media(examples.FHIR_REFERRAL_DETAILS),
            },
        },
        404: problem("No such referral among this partner's referrals"),
        410: problem("The referral was revoked: the person withdrew consent"),
    },
)
async def details(
    referral_id: uuid.UUID,
    principal: PartnerDep,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
) -> Response:
    found = await service.referral_details(
        session, settings, principal, referral_id, request_id=request.state.request_id
    )
    headers = {"Ruta-Consent": f"withdrawn; stands-on={found.legal_basis}"}
    return partner_document(found.document, headers if found.consent_withdrawn else None)


@router.post(
    "/v1/screenings/{screening_id:uuid}/consent/withdraw",
    summary="The person withdrew consent",
    description="For clinics: revokes every referral of the screening that rests on consent "
    "(whatever its state), and queues a signed `referral.revoked` notice to every partner "
    "that received it or could fetch it (thin mode included); those partners can no longer "
    "read the person's data. Referrals on child-protection duty or vital interest stand, "
    "whatever their service; their partners get a `referral.consent_withdrawn` notice. "
    "Answers with the referrals revoked and those that stand. Idempotent: withdrawing again "
    "revokes nothing more. Own organisation's screenings only; another's answers 404.",
    response_model=ConsentWithdrawn,
    responses={
        **ok(examples.CONSENT_WITHDRAWN, "The referrals revoked, and those that stand"),
        404: problem("No such screening in this organisation"),
    },
)
async def withdraw_consent(
    screening_id: uuid.UUID, principal: ClinicDep, session: SessionDep, settings: SettingsDep
) -> dict[str, Any]:
    await get_screening_for(session, principal, screening_id)
    outcome = await withdrawal.withdraw_consent(
        session, settings, principal, screening_id, now=utcnow()
    )
    return {
        "revoked": [str(r.id) for r in outcome.revoked],
        "standing": [
            {"id": str(r.id), "service": r.service, "legal_basis": r.legal_basis}
            for r in outcome.standing
        ],
    }


class ReferralPage(BaseModel):
    items: list[ReferralListItem]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


def _encode(referral: Referral) -> str:
    raw = f"{referral.created_at.isoformat()}|{referral.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The cursor's position; 400 for anything :func:`_encode` did not write, including a
    naive time or a bare date (which cannot be compared with the stored UTC times)."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        moment, ident = base64.urlsafe_b64decode(padded).decode().split("|")
        return aware_utc(datetime.fromisoformat(moment)), uuid.UUID(ident)
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors too
        raise BadRequest("The cursor is not valid.") from None


@router.get(
    "/v1/referrals",
    response_model=ReferralPage,
    summary="Referrals, for auditors",
    description="For auditors: who was referred where, when, why and on what legal basis. "
    "Filter by status, service, urgency, partner, region and creation time (ISO 8601 with "
    "an offset); newest first. Pass `next_cursor` back as `cursor` until it is null. Each "
    "item carries the reasons and the data categories the partner receives; "
    "`GET /v1/referrals/{id}` explains one in full.",
    responses={
        **ok(examples.REFERRAL_PAGE, "A page of referrals"),
        400: problem("Invalid cursor"),
    },
)
async def list_referrals(
    principal: AuditorDep,
    session: SessionDep,
    status: Annotated[str | None, Query(max_length=16)] = None,
    service_: Annotated[ServiceCategory | None, Query(alias="service")] = None,
    urgency: Annotated[str | None, Query(pattern="^(emergency|urgent|routine)$")] = None,
    partner_id: Annotated[str | None, Query(max_length=64)] = None,
    region: Annotated[str | None, Query(max_length=32)] = None,
    created_from: IsoDatetime | None = None,
    created_to: IsoDatetime | None = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> ReferralPage:
    query = select(Referral)
    for column, value in (
        (Referral.status, status),
        (Referral.service, service_.value if service_ else None),
        (Referral.urgency, urgency),
        (Referral.partner_id, partner_id),
        (Referral.region, region),
    ):
        if value is not None:
            query = query.where(column == value)
    if created_from is not None:
        query = query.where(Referral.created_at >= created_from)
    if created_to is not None:
        query = query.where(Referral.created_at < created_to)
    if cursor:
        moment, ident = _decode(cursor)
        query = query.where(
            or_(
                Referral.created_at < moment,
                and_(Referral.created_at == moment, Referral.id < ident),
            )
        )
    rows = list(
        (
            await session.execute(
                query.order_by(Referral.created_at.desc(), Referral.id.desc()).limit(limit + 1)
            )
        ).scalars()
    )
    page = rows[:limit]
    names = await partner_names(session, {r.partner_id for r in page if r.partner_id})
    return ReferralPage(
        items=[
            ReferralListItem.model_validate(
                {
                    **referral_view(r, names),
                    "screening_id": str(r.screening_id),
                    "created_at": r.created_at.isoformat(),
                    "region": r.region,
                }
            )
            for r in page
        ],
        next_cursor=_encode(page[-1]) if len(rows) > limit else None,
    )


@router.get(
    "/v1/referrals/{referral_id}",
    summary="A referral's history and explanation, for auditors",
    description="The decision trace (rule-set version and hash, fired rules and the values "
    "they read), why this partner was chosen and who was passed over, every status it has "
    "had, and every delivery attempt. For auditors.",
    response_model=ReferralExplanation,
    responses={
        **ok(examples.REFERRAL_EXPLANATION, "The referral, explained"),
        404: problem("No referral with this id"),
    },
)
async def explain(
    referral_id: uuid.UUID, principal: AuditorDep, session: SessionDep
) -> dict[str, Any]:
    referral = await session.get(Referral, referral_id)
    if referral is None:
        raise NotFound("No referral with this id.")
    decision = await session.get(Decision, referral.decision_id)
    assert decision is not None
    history = (
        await session.execute(
            select(ReferralEvent)
            .where(ReferralEvent.referral_id == referral.id)
            .order_by(ReferralEvent.id)
        )
    ).scalars()
    deliveries = list(
        (
            await session.execute(
                select(Delivery)
                .where(Delivery.referral_id == referral.id)
                .order_by(Delivery.created_at)
            )
        ).scalars()
    )
    attempts = list(
        (
            await session.execute(
                select(DeliveryAttempt)
                .where(DeliveryAttempt.delivery_id.in_([d.id for d in deliveries]))
                .order_by(DeliveryAttempt.id)
            )
        ).scalars()
    )
    names = await partner_names(
        session,
        {p for p in [referral.partner_id, *referral.tried_partner_ids] if p}
        | {d.partner_id for d in deliveries},
    )
    return {
        **referral_view(referral, names),
        "screening_id": str(referral.screening_id),
        "created_at": referral.created_at.isoformat(),
        "tried_partners": list(referral.tried_partner_ids),
        "decision": {
            "id": str(decision.id),
            "rule_set": {"version": decision.rule_set_version, "sha256": decision.rule_set_hash},
            "trace": decision.trace,
        },
        "match": referral.match,
        "history": [
            {
                "at": e.at.isoformat(),
                "from": e.from_status,
                "to": e.to_status,
                "reason": e.reason,
                "partner_id": e.partner_id,
                "actor_role": e.actor_role,
            }
            for e in history
        ],
        "deliveries": [
            {
                "id": str(d.id),
                "webhook_id": d.webhook_id,
                "partner_id": d.partner_id,
                "event_type": d.event_type,
                "status": d.status,
                "body_sha256": d.body_sha256,
                "replays": d.replays,
                "attempts": [
                    {
                        "attempt": a.attempt_no,
                        "started_at": a.started_at.isoformat(),
                        "latency_ms": a.latency_ms,
                        "status_code": a.status_code,
                        "outcome": a.outcome,
                        "error": a.error,
                    }
                    for a in attempts
                    if a.delivery_id == d.id
                ],
            }
            for d in deliveries
        ],
    }


@router.get(
    "/v1/screenings/{screening_id:uuid}/disclosures",
    summary="Which recipient received which data categories, when, and on what basis",
    description="The disclosure list of one case, for auditors and data-protection officers, "
    "read from the audit trail: every referral body forwarded (`forwarded`: partner, data "
    "categories, legal basis) and every read of personal data (`read`: who, which fields, "
    "for what purpose), oldest first.",
    response_model=Disclosures,
    responses={
        **ok(examples.DISCLOSURES, "The case's disclosures"),
        404: problem("No screening with this id"),
    },
)
async def disclosures(
    screening_id: uuid.UUID, principal: AuditorDep, session: SessionDep
) -> dict[str, Any]:
    if await session.get(Screening, screening_id) is None:
        raise NotFound("No screening with this id.")
    events = list(
        (
            await session.execute(
                select(AuditEvent)
                .where(
                    AuditEvent.screening_id == screening_id,
                    AuditEvent.action.in_(
                        [Action.referral_forwarded.value, Action.personal_data_read.value]
                    ),
                )
                .order_by(AuditEvent.seq)
            )
        ).scalars()
    )
    names = await partner_names(session, {e.partner_id for e in events if e.partner_id})
    return {
        "screening_id": str(screening_id),
        "disclosures": [
            {
                "seq": e.seq,
                "at": e.occurred_at.isoformat(),
                "kind": "forwarded" if e.action == Action.referral_forwarded.value else "read",
                "recipient": (
                    {"partner_id": e.partner_id, "name": names.get(e.partner_id, "")}
                    if e.partner_id
                    else {"actor_role": e.actor_role, "actor_id": e.actor_id}
                ),
                "referral_id": str(e.referral_id) if e.referral_id else None,
                "categories": e.data.get("fields_shared") or e.data.get("categories") or [],
                "fields": e.data.get("fields", []),
                "legal_basis": e.data.get("legal_basis"),
                "purpose": e.data.get("purpose"),
            }
            for e in events
        ],
    }
