"""What a coordinator does with a referral that needs a person (docs/console.md).

A referral needs a person when no partner is eligible (``held``), when every partner
declined or let the deadline pass (``escalated``, ``no_partner_left``), when an emergency
went to a partner that is closed because none was open (``emergency_no_partner_open``), or
when its delivery was dead-lettered (``undeliverable``). A coordinator may:

* **assign** it to a partner they chose, with a reason. The protocol still holds: the
  partner must offer the service, be active, take the person's age and sex, and have a role
  the referral's recipient accepts (never law enforcement for a referral not addressed to
  law enforcement). What a coordinator may knowingly set aside, having spoken with the
  partner, is recorded as ``overrides``: out of the partner's area, no capacity left,
  closed now, or tried before.
* **retry**: match it again (a partner may have capacity or be open now), or put a dead
  letter back in the outbox unchanged.
* **close** it with a reason, when it is not with a partner.

Each is a service of its own, audited, in the caller's transaction (flush only); the
moves between partners are routing's (app/referrals/routing.py).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import case, select
from sqlalchemy.ext.asyncio import AsyncSession

from app import audit
from app.audit import Action
from app.auth import Principal
from app.delivery import outbox
from app.errors import Conflict, NotFound, ValidationFailed, field_error
from app.models import Delivery, Referral, ReferralEvent
from app.partners.directory import Capacity, Partner, PartnerStatus, ServiceArea
from app.partners.matching import MatchResult, PassOverReason, SubjectFacts, match
from app.partners.service import directory_partners
from app.referrals.records import decided_of, load_screening, record_step
from app.referrals.routing import Rematched, assign, rematch
from app.referrals.service import get_referral
from app.referrals.state import ReferralStatus
from app.schemas.decision import PartnerRole, Recipient
from app.settings import Settings


class AssignReason(StrEnum):
    """Why a coordinator chose this partner (codes only: the trail holds no free text)."""

    partner_agreed = "partner_agreed"  # the partner agreed to take it (by phone, in person)
    only_partner_in_reach = "only_partner_in_reach"
    person_asked_for_partner = "person_asked_for_partner"
    capacity_confirmed = "capacity_confirmed"


class CloseReason(StrEnum):
    resolved_outside_ruta = "resolved_outside_ruta"
    person_unreachable = "person_unreachable"
    declined_by_person = "declined_by_person"
    no_service_exists = "no_service_exists"
    duplicate = "duplicate"


#: What a coordinator may set aside by choosing the partner; anything else refuses it.
OVERRIDABLE = {
    PassOverReason.out_of_area: "out_of_area",
    PassOverReason.no_capacity: "no_capacity",
}
_URGENCY_FIRST = case(
    (Referral.urgency == "emergency", 0), (Referral.urgency == "urgent", 1), else_=2
)


@dataclass
class Queue:
    #: Referrals needing a person: most urgent first, then the longest waiting.
    referrals: list[Referral]
    #: Dead letters that are not a referral's body (withdrawal notices, notifications).
    dead_letters: list[Delivery]


async def queue(session: AsyncSession, *, limit: int = 200) -> Queue:
    referrals = list(
        (
            await session.execute(
                select(Referral)
                .where(Referral.needs_human.is_(True))
                .order_by(_URGENCY_FIRST, Referral.updated_at, Referral.id)
                .limit(limit)
            )
        ).scalars()
    )
    dead = list(
        (
            await session.execute(
                select(Delivery)
                .where(
                    outbox.IS_DEAD,
                    Delivery.needs_human.is_(True),
                    Delivery.event_type != "referral.created",
                )
                .order_by(Delivery.finished_at, Delivery.id)
                .limit(limit)
            )
        ).scalars()
    )
    return Queue(referrals, dead)


async def needing_a_person(session: AsyncSession, referral_id: uuid.UUID) -> Referral:
    referral = await get_referral(session, referral_id)
    if not referral.needs_human:
        raise Conflict("This referral does not need a person now.", current_status=referral.status)
    return referral


def _refuse(message: str, code: str) -> ValidationFailed:
    return ValidationFailed([field_error(("partner_id",), message, code)])


def _protocol_check(referral: Referral, partner: Partner) -> None:
    """What no coordinator may set aside (docs/protocol.md, "Partner roles")."""
    recipient = Recipient(referral.recipient)
    if partner.role is PartnerRole.law_enforcement and recipient is not Recipient.law_enforcement:
        raise _refuse(
            "law enforcement receives only a referral addressed to it (the person's own "
            "law_enforcement consent)",
            "law_enforcement_not_allowed",
        )
    if not recipient.accepts(partner.role):
        raise _refuse("this partner's role may not take this referral", "role_not_allowed")
    if partner.status is not PartnerStatus.active:
        raise _refuse("this partner is paused", "paused")
    if partner.id == referral.partner_id:
        raise _refuse("the referral is already with this partner", "same_partner")


def _chosen_match(
    referral: Referral, partner: Partner, facts: SubjectFacts, settings: Settings, now: datetime
) -> tuple[MatchResult, list[str]]:
    """Match the referral against ``partner`` alone, setting aside only what a coordinator
    may (area, capacity, opening hours); return the result and what was set aside."""
    overrides: list[str] = []
    candidate = partner
    decided = decided_of(referral)
    for _ in range(len(OVERRIDABLE) + 1):
        result = match(decided, facts, [candidate], now, settings=settings)
        if result.matched:
            if result.escalation is not None:
                overrides.append("closed_now")
            return result, overrides
        reason = result.passed_over[0].reason if result.passed_over else None
        if reason not in OVERRIDABLE:
            code = reason.value if reason is not None else "not_eligible"
            raise _refuse("this partner cannot take this referral", code)
        overrides.append(OVERRIDABLE[reason])
        if reason is PassOverReason.out_of_area:
            candidate = candidate.model_copy(update={"service_area": ServiceArea(national=True)})
        else:
            maximum = max(candidate.capacity.maximum, 1)
            candidate = candidate.model_copy(
                update={"capacity": Capacity(available=1, maximum=maximum)}
            )
    raise _refuse("this partner cannot take this referral", "not_eligible")  # pragma: no cover


async def assign_to(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    referral_id: uuid.UUID,
    partner_id: str,
    reason: AssignReason,
    *,
    now: datetime,
) -> Referral:
    """Give a referral that needs a person to the partner a coordinator chose."""
    referral = await needing_a_person(session, referral_id)
    partners = await directory_partners(session)
    partner = next((p for p in partners if p.id == partner_id), None)
    if partner is None:
        raise _refuse("no partner with this id", "unknown")
    _protocol_check(referral, partner)
    row, screening = await load_screening(session, settings, referral.screening_id)
    facts = SubjectFacts.from_screening(screening, now.date())
    result, overrides = _chosen_match(referral, partner, facts, settings, now)
    if partner.id in referral.tried_partner_ids:
        overrides.append("excluded")
    # The coordinator acted: nobody else needs to, whatever the hours say.
    result = result.model_copy(
        update={
            "chosen_because": (
                "coordinator_assigned",
                f"reason_{reason.value}",
                *result.chosen_because,
            ),
            "escalation": None,
            "needs_human": False,
        }
    )
    await outbox.cancel_pending(session, referral.id, now=now)
    previous_status = referral.status
    if referral.partner_id is not None and referral.partner_id not in referral.tried_partner_ids:
        referral.tried_partner_ids = [*referral.tried_partner_ids, referral.partner_id]
    await assign(
        session,
        settings,
        referral,
        Rematched(result, row, screening),
        partners,
        reason=f"coordinator_{reason.value}",
        now=now,
        actor=principal,
        action=Action.referral_assigned,
        data={"previous_status": previous_status, "overrides": sorted(overrides)},
    )
    return referral


@dataclass(frozen=True, slots=True)
class Retried:
    referral: Referral
    #: ``matched`` (a partner was found), ``replayed`` (the dead letter is queued again) or
    #: ``no_partner`` (nothing changed: still no eligible partner, or none open).
    outcome: str


async def retry(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    referral_id: uuid.UUID,
    *,
    now: datetime,
) -> Retried:
    """Try again: a dead letter goes back to the outbox unchanged; otherwise the referral
    is matched again from the top of the directory (partners tried before included)."""
    referral = await needing_a_person(session, referral_id)
    previous_status = referral.status
    why = referral.human_reason or "coordinator"
    if referral.status == ReferralStatus.undeliverable.value:
        dead = (
            await session.execute(
                select(Delivery)
                .where(
                    Delivery.referral_id == referral.id,
                    Delivery.partner_id == referral.partner_id,
                    Delivery.event_type == "referral.created",
                    Delivery.status == "dead",
                )
                .order_by(Delivery.created_at.desc())
                .limit(1)
            )
        ).scalar_one_or_none()
        if dead is None:
            raise Conflict("There is no dead letter to send again.")
        await outbox.replay_dead_letter(session, dead.id, actor=principal, now=now)
        await _retried(session, principal, referral, why, "replayed", delivery_id=dead.id)
        return Retried(referral, "replayed")
    partners = await directory_partners(session)
    rematched = await rematch(session, settings, referral, partners, now=now)
    result = rematched.result
    better = result.matched and (
        referral.partner_id is None
        or (result.escalation is None and result.partner_id != referral.partner_id)
    )
    if not better:
        await _retried(session, principal, referral, why, "no_partner")
        return Retried(referral, "no_partner")
    await outbox.cancel_pending(session, referral.id, now=now)
    if referral.partner_id is not None:
        referral.tried_partner_ids = [*referral.tried_partner_ids, referral.partner_id]
    await assign(
        session,
        settings,
        referral,
        rematched,
        partners,
        reason="coordinator_retry",
        now=now,
        actor=principal,
        action=Action.referral_assigned,
        data={"previous_status": previous_status},
    )
    await _retried(session, principal, referral, why, "matched", next_partner=referral.partner_id)
    return Retried(referral, "matched")


async def _retried(
    session: AsyncSession,
    principal: Principal,
    referral: Referral,
    why: str,
    outcome: str,
    *,
    next_partner: str | None = None,
    delivery_id: uuid.UUID | None = None,
) -> None:
    await audit.record(
        session,
        action=Action.referral_retried,
        actor=principal,
        referral_id=referral.id,
        screening_id=referral.screening_id,
        partner_id=referral.partner_id,
        data={
            "reason": why,
            "outcome": outcome,
            "next_partner_id": next_partner,
            "attempt": referral.assignment,
            "delivery_id": str(delivery_id) if delivery_id else None,
        },
    )


async def close(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    referral_id: uuid.UUID,
    reason: CloseReason,
    *,
    now: datetime,
) -> Referral:
    """End a referral that needs a person and is with no partner now (``cancelled``).
    One with a partner (an emergency sent to a closed partner, a dead letter) is assigned
    elsewhere or retried instead: its partner may already be acting on it."""
    referral = await needing_a_person(session, referral_id)
    if referral.partner_id is not None and referral.status != ReferralStatus.undeliverable.value:
        raise Conflict(
            "This referral is with a partner: assign it to another, or retry.",
            current_status=referral.status,
        )
    await outbox.cancel_pending(session, referral.id, now=now)
    previous = record_step(
        session,
        referral,
        ReferralStatus.cancelled,
        actor=principal,
        reason=f"coordinator_{reason.value}",
        now=now,
    )
    referral.needs_human = False
    referral.deadline_at = None
    await audit.record(
        session,
        action=Action.referral_closed,
        actor=principal,
        referral_id=referral.id,
        screening_id=referral.screening_id,
        partner_id=referral.partner_id,
        data={"reason": reason.value, "previous_status": previous},
    )
    return referral


async def replay_notice(
    session: AsyncSession, principal: Principal, delivery_id: uuid.UUID, *, now: datetime
) -> None:
    """Send a dead withdrawal notice or notification again (same webhook-id and bytes)."""
    delivery = await session.get(Delivery, delivery_id)
    if delivery is None:
        raise NotFound("No such dead letter.")
    if delivery.event_type == "referral.created":
        raise Conflict("A referral's body is sent again from its referral: retry the referral.")
    if not await outbox.replay_dead_letter(session, delivery_id, actor=principal, now=now):
        raise Conflict("Only dead letters can be sent again.", current_status=delivery.status)


@dataclass(frozen=True, slots=True)
class Case:
    """A referral that needs a person, as a coordinator sees it: no personal data, only
    what routing knows (service, urgency, region, who was tried and why not)."""

    referral: Referral
    history: list[ReferralEvent]
    #: The partners whose role the referral's recipient accepts and that offer its service,
    #: in the directory's order: the ones a coordinator may choose from.
    candidates: list[Partner]
    names: dict[str, str]


async def open_case(session: AsyncSession, referral_id: uuid.UUID) -> Case:
    referral = await session.get(Referral, referral_id)
    if referral is None:
        raise NotFound("No referral with this id.")
    history = list(
        (
            await session.execute(
                select(ReferralEvent)
                .where(ReferralEvent.referral_id == referral.id)
                .order_by(ReferralEvent.id)
            )
        ).scalars()
    )
    partners = await directory_partners(session)
    recipient = Recipient(referral.recipient)
    candidates = [
        p
        for p in partners
        if recipient.accepts(p.role)
        and referral.service in {s.value for s in p.services}
        and p.status is PartnerStatus.active
        and p.id != referral.partner_id
    ]
    return Case(referral, history, candidates, {p.id: p.name for p in partners})
