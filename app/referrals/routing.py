"""Where a referral goes after intake: to the next eligible partner when one declines or
lets the deadline pass, to a person when none is left, and on when a held referral finds
a partner. Matching decides each step (app/partners/matching.py); nothing here widens the
kind of partner a referral may go to (docs/protocol.md, rule 13).

Everything here runs inside the caller's transaction and only flushes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app import audit
from app.audit import Action
from app.audit.writer import Actor
from app.auth import Principal
from app.delivery import outbox
from app.models import Referral, Screening
from app.partners.directory import Partner
from app.partners.matching import MatchResult, SubjectFacts, match
from app.partners.service import directory_partners
from app.referrals.records import ROUTER, decided_of, dispatch, load_screening, record_step
from app.referrals.state import AWAITING_RESPONSE, ReferralStatus
from app.schemas.screening import ScreeningIn
from app.settings import Settings


@dataclass(frozen=True, slots=True)
class Rematched:
    """A referral matched again: the outcome, and the screening it was matched on."""

    result: MatchResult
    row: Screening
    screening: ScreeningIn


async def rematch(
    session: AsyncSession,
    settings: Settings,
    referral: Referral,
    partners: list[Partner],
    *,
    now: datetime,
    exclude: frozenset[str] = frozenset(),
) -> Rematched:
    row, screening = await load_screening(session, settings, referral.screening_id)
    facts = SubjectFacts.from_screening(screening, now.date())
    result = match(decided_of(referral), facts, partners, now, settings=settings, exclude=exclude)
    return Rematched(result, row, screening)


async def assign(
    session: AsyncSession,
    settings: Settings,
    referral: Referral,
    rematched: Rematched,
    partners: list[Partner],
    *,
    reason: str,
    now: datetime,
    actor: Principal | Actor = ROUTER,
    action: Action = Action.referral_fallback,
    data: dict[str, Any] | None = None,
) -> None:
    """Give the referral to the partner ``result`` chose: its deadline, explanation and
    flags, a history step, the body in the outbox, and the audit events (``action`` by
    ``actor``: the router's fallback, or a coordinator's assignment with its ``data``)."""
    result = rematched.result
    previous_partner = referral.partner_id
    partner = next(p for p in partners if p.id == result.partner_id)
    if referral.partner_id is not None:
        referral.assignment += 1
    referral.partner_id = partner.id
    referral.deadline_at = result.respond_by
    referral.match = result.model_dump(mode="json")
    referral.flags = sorted(f.value for f in result.flags)
    referral.needs_human = result.needs_human
    referral.human_reason = result.human_reason
    referral.closed_at = None  # a coordinator may reopen an escalated referral
    record_step(session, referral, ReferralStatus.queued, actor=actor, reason=reason, now=now)
    decided = decided_of(referral)
    await dispatch(
        session,
        settings,
        referral,
        decided,
        rematched.row,
        rematched.screening,
        partner,
        result,
        now=now,
    )
    await audit.record(
        session,
        action=action,
        actor=actor,
        referral_id=referral.id,
        screening_id=referral.screening_id,
        partner_id=previous_partner,
        data={
            "reason": reason,
            "next_partner_id": partner.id,
            "attempt": referral.assignment,
            **(data or {}),
        },
    )
    if result.escalation is not None:
        await _escalated(session, referral, result.escalation.value, previous_partner)


async def _escalated(
    session: AsyncSession, referral: Referral, reason: str, partner_id: str | None
) -> None:
    await audit.record(
        session,
        action=Action.referral_escalated,
        actor=ROUTER,
        referral_id=referral.id,
        screening_id=referral.screening_id,
        partner_id=partner_id,
        data={
            "reason": reason,
            "service": referral.service,
            "urgency": referral.urgency,
            "attempt": referral.assignment,
        },
    )


async def fall_back(
    session: AsyncSession, settings: Settings, referral: Referral, *, reason: str, now: datetime
) -> None:
    """Move the referral to the next eligible partner of the same kind, or escalate it to
    a person when none is left."""
    await outbox.cancel_pending(session, referral.id, now=now)
    previous_partner = referral.partner_id
    if previous_partner is not None:
        referral.tried_partner_ids = [*referral.tried_partner_ids, previous_partner]
    partners = await directory_partners(session)
    tried = frozenset(referral.tried_partner_ids)
    rematched = await rematch(session, settings, referral, partners, now=now, exclude=tried)
    if rematched.result.matched:
        await assign(session, settings, referral, rematched, partners, reason=reason, now=now)
        return
    referral.partner_id = None
    referral.needs_human = True
    referral.human_reason = "no_partner_left"
    referral.deadline_at = None
    record_step(session, referral, ReferralStatus.escalated, actor=ROUTER, reason=reason, now=now)
    await _escalated(session, referral, "no_partner_left", previous_partner)


async def mark_delivered(
    session: AsyncSession,
    referral: Referral,
    *,
    delivery_id: uuid.UUID,
    body_sha256: str,
    attempt: int,
    now: datetime,
    http_status: int | None = None,
) -> None:
    """The partner's endpoint took the referral: record what was disclosed, to whom, why,
    and the attempt that delivered it (its number and, when posted, the partner's HTTP
    status: that attempt has no ``referral.attempted`` event of its own)."""
    if referral.status == ReferralStatus.queued.value:
        record_step(session, referral, ReferralStatus.delivered, actor=ROUTER, reason=None, now=now)
    await audit.record(
        session,
        action=Action.referral_forwarded,
        actor=audit.system("delivery-worker"),
        referral_id=referral.id,
        screening_id=referral.screening_id,
        partner_id=referral.partner_id,
        data={
            "delivery_id": str(delivery_id),
            "payload_hash": body_sha256,
            "fields_shared": list(referral.data_categories),
            "legal_basis": referral.legal_basis,
            "service": referral.service,
            "attempt": attempt,
            **({"http_status": http_status} if http_status is not None else {}),
        },
    )


async def mark_undeliverable(
    session: AsyncSession, referral: Referral, *, reason: str, now: datetime
) -> None:
    """Retries are exhausted: a dead letter that a person must act on."""
    referral.needs_human = True
    referral.human_reason = reason[:64]
    record_step(
        session, referral, ReferralStatus.undeliverable, actor=ROUTER, reason=reason, now=now
    )
    await _escalated(session, referral, reason[:64], referral.partner_id)


async def sweep_deadlines(session: AsyncSession, settings: Settings, *, now: datetime) -> int:
    """Referrals whose partner let the response deadline pass move to the next partner."""
    overdue = (
        (
            await session.execute(
                select(Referral)
                .where(
                    Referral.status.in_([s.value for s in AWAITING_RESPONSE]),
                    Referral.deadline_at.is_not(None),
                    Referral.deadline_at < now,
                )
                .order_by(Referral.deadline_at)
                .limit(100)
            )
        )
        .scalars()
        .all()
    )
    for referral in overdue:
        await fall_back(session, settings, referral, reason="deadline_missed", now=now)
    return len(overdue)


async def retry_held(session: AsyncSession, settings: Settings, *, now: datetime) -> int:
    """Held referrals (no eligible partner) are matched again as the directory changes."""
    held = (
        (
            await session.execute(
                select(Referral).where(Referral.status == ReferralStatus.held.value).limit(100)
            )
        )
        .scalars()
        .all()
    )
    if not held:
        return 0
    partners = await directory_partners(session)
    routed = 0
    for referral in held:
        rematched = await rematch(session, settings, referral, partners, now=now)
        if rematched.result.matched:
            await assign(
                session, settings, referral, rematched, partners, reason="partner_found", now=now
            )
            routed += 1
    return routed
