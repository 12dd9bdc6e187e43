"""What every part of the referral lifecycle shares: rebuilding a referral's decision from
its row, reading its screening back, keeping its history, and handing a partner's body to
the outbox.

Everything here runs inside the caller's transaction and only flushes.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app import audit
from app.audit.writer import Actor, actor_of
from app.auth import Principal
from app.delivery import outbox
from app.errors import NotFound
from app.models import Delivery, Referral, ReferralEvent, Screening, Subject
from app.partners.directory import Partner
from app.partners.matching import MatchResult
from app.partners.minimiser import OutboundReferral, build_referral_body
from app.referrals.state import ReferralStatus, is_terminal
from app.schemas.decision import (
    DecidedReferral,
    LegalBasis,
    Reason,
    Recipient,
    ReferralFlag,
    Urgency,
)
from app.schemas.screening import ScreeningIn, ServiceCategory, merge_personal
from app.services.personal import decrypt_personal
from app.settings import Settings

ROUTER = audit.system("referral-router")
_KNOWN_FLAGS = frozenset(f.value for f in ReferralFlag)


def decided_of(row: Referral) -> DecidedReferral:
    """Rebuild the decided referral a row was made from (for fallback and thin details)."""
    return DecidedReferral(
        service=ServiceCategory(row.service),
        recipient=Recipient(row.recipient),
        urgency=Urgency(row.urgency),
        legal_basis=LegalBasis(row.legal_basis),
        identifying=row.identifying,
        flags=frozenset(ReferralFlag(f) for f in row.flags if f in _KNOWN_FLAGS),
        reasons=tuple(Reason.model_validate(r) for r in row.reasons),
    )


async def load_screening(
    session: AsyncSession, settings: Settings, screening_id: uuid.UUID
) -> tuple[Screening, ScreeningIn]:
    """The stored screening, personal fields decrypted (none once the subject is erased)."""
    row = await session.get(Screening, screening_id)
    if row is None:
        raise NotFound("No screening with this id.")
    subject = await session.get(Subject, row.subject_id)
    assert subject is not None
    document = merge_personal(row.data, decrypt_personal(settings, subject, row))
    document["subject"] = {k: v for k, v in document["subject"].items() if k != "age_source"}
    return row, ScreeningIn.model_validate(document)


def record_step(
    session: AsyncSession,
    referral: Referral,
    to_status: ReferralStatus,
    *,
    actor: Principal | Actor,
    reason: str | None,
    now: datetime,
) -> str:
    """Move the referral to ``to_status`` and keep the step in its history; returns the
    previous status."""
    previous = referral.status
    referral.status = to_status.value
    referral.updated_at = now
    if is_terminal(to_status):
        referral.closed_at = now
    who = actor_of(actor)
    session.add(
        ReferralEvent(
            referral_id=referral.id,
            from_status=previous,
            to_status=to_status.value,
            reason=reason,
            partner_id=referral.partner_id,
            actor_role=who.role or who.type,
            actor_id=who.id,
            at=now,
        )
    )
    return previous


def build_body(
    settings: Settings,
    referral_id: uuid.UUID,
    organisation: str,
    decided: DecidedReferral,
    screening: ScreeningIn,
    partner: Partner,
    result: MatchResult,
    document: dict[str, Any] | None = None,
    *,
    consent_withdrawn: bool = False,
) -> OutboundReferral:
    """The partner's body, built by the minimiser (the only code that builds one)."""
    return build_referral_body(
        referral_id=referral_id,
        partner_id=partner.id,
        decided=decided,
        screening=screening,
        respond_by=result.respond_by,
        flags=result.flags,
        referring_organisation=organisation,
        public_base_url=settings.public_base_url,
        thin=partner.endpoint.thin,
        payload_format=partner.endpoint.format,
        organisation=partner.organisation,
        document=document,
        consent_withdrawn=consent_withdrawn,
    )


async def dispatch(
    session: AsyncSession,
    settings: Settings,
    referral: Referral,
    decided: DecidedReferral,
    screening: Screening,
    facts: ScreeningIn,
    partner: Partner,
    result: MatchResult,
    *,
    now: datetime,
) -> OutboundReferral:
    """Build the partner's body with the minimiser and put it in the outbox."""
    outbound = build_body(
        settings,
        referral.id,
        referral.organisation,
        decided,
        facts,
        partner,
        result,
        consent_withdrawn=screening.consent_withdrawn_at is not None,
    )
    referral.data_categories = list(outbound.data_categories)
    await outbox.enqueue(
        session,
        settings,
        referral_id=referral.id,
        partner_id=partner.id,
        subject_id=referral.subject_id,
        event_type="referral.created",
        body=outbound.to_bytes(),
        urgency=decided.urgency,
        now=now,
    )
    return outbound


async def recipients_so_far(session: AsyncSession, referral: Referral) -> list[str]:
    """Every partner that received this referral's body, or may have (an attempt was made:
    the answer may have been lost), or can fetch its details (its current partner, once a
    body was delivered to it). In the order they were sent."""
    rows = await session.execute(
        select(Delivery.partner_id, Delivery.status, Delivery.attempt_count)
        .where(Delivery.referral_id == referral.id, Delivery.event_type == "referral.created")
        .order_by(Delivery.created_at)
    )
    partners: dict[str, None] = {}
    for partner_id, status, attempts in rows:
        if status == "delivered" or attempts > 0:
            partners[partner_id] = None
    return list(partners)
