"""The person withdraws consent: revoke what consent enabled, and nothing else
(docs/protocol.md, rule 14).

* Every referral that rests on ``consent`` ends ``revoked``, whatever its state (a pending
  delivery is cancelled, and a completed referral is revoked too: the partner must stop
  processing the data). Its partners can no longer read the person's data
  (``GET /v1/referrals/{id}/details`` answers 410).
* A referral on ``child_protection_duty`` or ``vital_interest`` stands, whatever its service
  (a child's emergency medical care after sexual violence included).
* Every partner that received a body, or may have (an attempt was made), or can fetch its
  details, is told: ``referral.revoked`` (stop, and delete what you received) or
  ``referral.consent_withdrawn`` (the referral stands on its basis). Thin-mode partners
  included. The notices carry ids and an instruction, never data about the person.

Runs inside the caller's transaction and only flushes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app import audit
from app.audit import Action
from app.auth import Principal
from app.delivery import outbox
from app.errors import NotFound
from app.models import PartnerRow, Referral, Screening, Subject
from app.observability import actor_fields, log_on_commit
from app.partners.directory import Organisation, PayloadFormat
from app.partners.minimiser import build_notice_body
from app.referrals.records import recipients_so_far, record_step
from app.referrals.state import ReferralStatus
from app.schemas.decision import LegalBasis, Urgency
from app.settings import Settings

log = structlog.get_logger("ruta.referrals")
NoticeKind = Literal["referral.revoked", "referral.consent_withdrawn"]


@dataclass
class Withdrawal:
    """The screening's referrals after the withdrawal."""

    #: Every referral on consent (now revoked, by this withdrawal or an earlier one).
    revoked: list[Referral] = field(default_factory=list)
    #: Referrals on child-protection duty or vital interest, which stand.
    standing: list[Referral] = field(default_factory=list)
    #: How many this call revoked (0 when consent had already been withdrawn).
    newly_revoked: int = 0


async def withdraw_consent(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    screening_id: uuid.UUID,
    *,
    now: datetime,
) -> Withdrawal:
    """Revoke the screening's consent-basis referrals and tell every partner concerned.
    Idempotent: a second withdrawal revokes nothing more and sends no second notice."""
    postgres = session.get_bind().dialect.name == "postgresql"
    screening = await session.get(Screening, screening_id, with_for_update=postgres)
    if screening is None:
        raise NotFound("No screening with this id.")
    first = screening.consent_withdrawn_at is None
    if first:
        screening.consent_withdrawn_at = now
    referrals = (
        (
            await session.execute(
                select(Referral)
                .where(Referral.screening_id == screening_id)
                .order_by(Referral.created_at, Referral.id)
            )
        )
        .scalars()
        .all()
    )
    outcome = Withdrawal()
    for referral in referrals:
        if referral.legal_basis != LegalBasis.consent.value:
            outcome.standing.append(referral)
            if first:
                await _stands(session, settings, referral, now=now)
            continue
        outcome.revoked.append(referral)
        if referral.status != ReferralStatus.revoked.value:
            await _revoke(session, settings, principal, referral, now=now)
            outcome.newly_revoked += 1
    await audit.record(
        session,
        action=Action.consent_withdrawn,
        actor=principal,
        screening_id=screening_id,
        data={"count": outcome.newly_revoked, "standing": len(outcome.standing)},
    )
    log_on_commit(
        session,
        log,
        "info",
        "consent_withdrawn",
        screening_id=str(screening_id),
        revoked=outcome.newly_revoked,
        standing=len(outcome.standing),
        first=first,
        **actor_fields(principal),
    )
    return outcome


async def _revoke(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    referral: Referral,
    *,
    now: datetime,
) -> None:
    recipients = await recipients_so_far(session, referral)
    await outbox.cancel_pending(session, referral.id, now=now)
    previous = record_step(
        session,
        referral,
        ReferralStatus.revoked,
        actor=principal,
        reason="consent_withdrawn",
        now=now,
    )
    referral.needs_human = False
    for partner_id in recipients:
        await _notify(session, settings, referral, partner_id, "referral.revoked", now=now)
    log_on_commit(
        session,
        log,
        "info",
        "referral_revoked",
        referral_id=str(referral.id),
        screening_id=str(referral.screening_id),
        partner_id=referral.partner_id,
        service=referral.service,
        previous_status=previous,
        reason="consent_withdrawn",
        partners_notified=len(recipients),
    )
    await audit.record(
        session,
        action=Action.referral_revoked,
        actor=principal,
        referral_id=referral.id,
        screening_id=referral.screening_id,
        partner_id=referral.partner_id,
        data={
            "reason": "consent_withdrawn",
            "service": referral.service,
            "previous_status": previous,
        },
    )


async def _stands(
    session: AsyncSession, settings: Settings, referral: Referral, *, now: datetime
) -> None:
    """Tell the partners of a referral that stands on its basis that consent was withdrawn:
    those that received it, and the partner that holds it now (its body may still be on
    the way)."""
    recipients = await recipients_so_far(session, referral)
    if referral.partner_id is not None and referral.partner_id not in recipients:
        recipients.append(referral.partner_id)
    for partner_id in recipients:
        await _notify(
            session, settings, referral, partner_id, "referral.consent_withdrawn", now=now
        )


async def _notify(
    session: AsyncSession,
    settings: Settings,
    referral: Referral,
    partner_id: str,
    kind: NoticeKind,
    *,
    now: datetime,
) -> None:
    subject = await session.get(Subject, referral.subject_id)
    if subject is None or subject.wrapped_dek is None:
        # Erased: every body is already unreadable and the outbox cannot seal a new one.
        log.warning("notice_not_sent_subject_erased", referral_id=str(referral.id), kind=kind)
        return
    row = await session.get(PartnerRow, partner_id)
    body = build_notice_body(
        kind=kind,
        referral_id=referral.id,
        partner_id=partner_id,
        legal_basis=referral.legal_basis if kind == "referral.consent_withdrawn" else None,
        payload_format=PayloadFormat(row.payload_format) if row else PayloadFormat.ruta_json,
        organisation=Organisation(id=row.organisation_id, name=row.organisation_name)
        if row
        else None,
        public_base_url=settings.public_base_url,
    )
    await outbox.enqueue(
        session,
        settings,
        referral_id=referral.id,
        partner_id=partner_id,
        subject_id=referral.subject_id,
        event_type=kind,
        body=body,
        urgency=Urgency(referral.urgency),
        now=now,
    )
