from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from app.deps import AuditorDep, ClinicDep, PartnerDep, SessionDep, SettingsDep
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
from app.referrals import log, service, withdrawal
from app.referrals.state import PartnerStatus, RejectReason
from app.schemas import examples
from app.schemas.decision import LegalBasis, Trace
from app.schemas.outcome import ReferralView, RuleSetRef
from app.schemas.screening import ServiceCategory
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
    items, next_cursor = await log.list_referrals(
        session,
        log.LogFilter(
            status=status,
            service=service_.value if service_ else None,
            urgency=urgency,
            partner_id=partner_id,
            region=region,
            created_from=created_from,
            created_to=created_to,
        ),
        cursor=cursor,
        limit=limit,
    )
    return ReferralPage(
        items=[ReferralListItem.model_validate(item) for item in items],
        next_cursor=next_cursor,
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
    return await log.explain(session, referral_id)


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
    return await log.disclosures(session, screening_id)
