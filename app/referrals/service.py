"""The partner's side of a referral: who owns it, what it reports, what it may read.

Everything here runs inside the caller's transaction and only flushes. Planning at intake
is in ``planning.py``, the moves between partners in ``routing.py``, consent withdrawal in
``withdrawal.py``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app import audit
from app.audit import Action
from app.auth import Principal
from app.errors import Conflict, Gone, NotFound, ValidationFailed, field_error
from app.models import PartnerRow, Referral
from app.observability import actor_fields, log_on_commit
from app.partners.directory import PayloadFormat
from app.partners.matching import Escalation
from app.partners.minimiser import build_referral_body
from app.partners.service import directory_partners
from app.referrals.records import decided_of, load_screening, record_step
from app.referrals.routing import fall_back
from app.referrals.state import PartnerStatus, ReferralStatus, RejectReason, partner_may_report
from app.settings import Settings

log = structlog.get_logger("ruta.referrals")
#: Reports by which a partner takes a referral on.
ACKNOWLEDGED = frozenset(
    {PartnerStatus.received, PartnerStatus.accepted, PartnerStatus.in_progress}
)


async def owns(session: AsyncSession, principal: Principal, referral: Referral) -> bool:
    """A partner client owns the referrals sent to its organisation's partners, by the
    organisation's **id** (a display name is not an identity: two organisations may share
    one, and an admin may rename either)."""
    if referral.partner_id is None or principal.organisation is None:
        return False
    row = await session.get(PartnerRow, referral.partner_id)
    return row is not None and row.organisation_id == principal.organisation


async def get_referral(session: AsyncSession, referral_id: uuid.UUID) -> Referral:
    postgres = session.get_bind().dialect.name == "postgresql"
    referral = await session.get(Referral, referral_id, with_for_update=postgres)
    if referral is None:
        raise NotFound("No referral with this id.")
    return referral


async def report_status(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    referral_id: uuid.UUID,
    status: PartnerStatus,
    reason: RejectReason | None,
    *,
    now: datetime,
) -> Referral:
    """A partner reports on one of its own referrals (FHIR Task status vocabulary)."""
    referral = await get_referral(session, referral_id)
    if not await owns(session, principal, referral):
        # Another partner's referral is indistinguishable from a missing one.
        raise NotFound("No referral with this id.")
    current = ReferralStatus(referral.status)
    if status is PartnerStatus.rejected and reason is None:
        raise ValidationFailed([field_error(("reason",), "a rejection needs a reason", "missing")])
    if status is not PartnerStatus.rejected and reason is not None:
        raise ValidationFailed(
            [field_error(("reason",), "a reason goes with a rejection only", "unexpected")]
        )
    if not partner_may_report(current, status):
        raise Conflict(
            "This status cannot follow the referral's current status.",
            current_status=current.value,
            reported_status=status.value,
        )
    previous = record_step(
        session,
        referral,
        ReferralStatus(status.value),
        actor=principal,
        reason=reason.value if reason else None,
        now=now,
    )
    if status in ACKNOWLEDGED and referral.human_reason == Escalation.emergency_no_partner_open:
        # The closed partner answered after all: the person alerted need not act any more.
        referral.needs_human = False
        referral.human_reason = None
    await _recorded(session, principal, referral, previous, status, reason)
    if status is PartnerStatus.rejected:
        assert reason is not None
        await fall_back(session, settings, referral, reason=f"rejected_{reason.value}", now=now)
    return referral


async def _recorded(
    session: AsyncSession,
    principal: Principal,
    referral: Referral,
    previous: str,
    status: PartnerStatus,
    reason: RejectReason | None,
) -> None:
    """The report in the audit trail and, once committed, in the log."""
    await audit.record(
        session,
        action=Action.referral_status_changed,
        actor=principal,
        referral_id=referral.id,
        partner_id=referral.partner_id,
        screening_id=referral.screening_id,
        data={
            "previous_status": previous,
            "status": status.value,
            **({"reason": reason.value} if reason else {}),
        },
    )
    log_on_commit(
        session, log, "info", "referral_status_reported", referral_id=str(referral.id),
        partner_id=referral.partner_id, previous_status=previous, status=status.value,
        reason=reason.value if reason else None, **actor_fields(principal),
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Details:
    """A referral's need-to-know body as its partner fetches it."""

    document: dict[str, Any]
    #: The person withdrew consent, and the referral stands on ``legal_basis``.
    consent_withdrawn: bool
    legal_basis: str


async def referral_details(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    referral_id: uuid.UUID,
    *,
    request_id: str | None,
    purpose: str = "thin_referral_fetch",
    payload_format: PayloadFormat | None = None,
) -> Details:
    """The body a thin-mode partner fetches, built by the same minimiser as a delivery,
    and the read recorded as a disclosure for ``purpose``. Another partner's referral
    answers 404; a revoked referral 410, recorded as a refused read (its data may no longer
    be read). The console reads it as ``ruta-json`` (``payload_format``) to show it."""
    referral = await session.get(Referral, referral_id)
    if referral is None or not await owns(session, principal, referral):
        raise NotFound("No referral with this id.")
    if referral.status == ReferralStatus.revoked.value:
        raise Gone(
            "This referral was revoked: the person withdrew consent, and its data may no "
            "longer be read.",
            refused="referral_revoked",
            refs={
                "referral_id": referral.id,
                "screening_id": referral.screening_id,
                "partner_id": referral.partner_id,
            },
        )
    row, screening = await load_screening(session, settings, referral.screening_id)
    decided = decided_of(referral)
    assert referral.partner_id is not None
    partners = await directory_partners(session)
    partner = next((p for p in partners if p.id == referral.partner_id), None)
    withdrawn = row.consent_withdrawn_at is not None
    outbound = build_referral_body(
        referral_id=referral.id,
        partner_id=referral.partner_id,
        decided=decided,
        screening=screening,
        respond_by=referral.deadline_at or referral.updated_at,
        flags=frozenset(decided.flags),
        referring_organisation=referral.organisation,
        public_base_url=settings.public_base_url,
        thin=False,
        event="referral.details",
        # A fhir-r4 partner fetches its details as a FHIR Bundle too (same minimised body).
        payload_format=payload_format
        or (partner.endpoint.format if partner else PayloadFormat.ruta_json),
        organisation=partner.organisation if partner else None,
        consent_withdrawn=withdrawn,
    )
    await audit.record(
        session,
        action=Action.personal_data_read,
        actor=principal,
        referral_id=referral.id,
        screening_id=referral.screening_id,
        partner_id=referral.partner_id,
        request_id=request_id,
        data={
            "fields": list(outbound.fields),
            "categories": list(outbound.data_categories),
            "purpose": purpose,
        },
    )
    return Details(outbound.document, withdrawn, referral.legal_basis)
