"""A partner organisation's inbox, as the console shows it: the referrals its partners
hold, the notices sent to them, and one referral opened (a disclosure, recorded as the
API's details read is).

Reads only, except :func:`open_referral`, which records the read. Runs in the caller's
transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import BindParameter, Select, bindparam, case, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Principal
from app.errors import NotFound
from app.models import Delivery, Referral, Screening
from app.models.base import matches
from app.models.delivery import NOTICE_EVENT_TYPES
from app.partners.directory import PayloadFormat
from app.partners.service import organisation_partners
from app.referrals.service import Details, owns, referral_details
from app.referrals.state import PARTNER_TRANSITIONS, PartnerStatus, ReferralStatus
from app.settings import Settings

#: Statuses in which the partner still has work to do on a referral: those it may report on.
OPEN = tuple(PARTNER_TRANSITIONS)
OPEN_VALUES = tuple(s.value for s in OPEN)
NOTICES = NOTICE_EVENT_TYPES
URGENCIES = ("emergency", "urgent", "routine")
_URGENCY_FIRST = case(
    (Referral.urgency == "emergency", 0), (Referral.urgency == "urgent", 1), else_=2
)
#: The statuses written into the SQL, not bound: PostgreSQL then uses the partial indexes
#: whose predicate is this very list (migration 0011), in a generic plan too.
_STATUSES: BindParameter[tuple[str, ...]] = bindparam(
    "open_statuses", OPEN_VALUES, expanding=True, literal_execute=True
)
#: Likewise the notices' event types: the partial index ix_deliveries_notices (0012).
_NOTICES: BindParameter[tuple[str, ...]] = bindparam(
    "notice_types", NOTICES, expanding=True, literal_execute=True
)
IS_OPEN = Referral.status.in_(_STATUSES)
IS_CLOSED = Referral.status.not_in(_STATUSES)


@dataclass
class Inbox:
    partner_names: dict[str, str]
    #: Open referrals, most urgent first, newest first within an urgency.
    open: list[Referral] = field(default_factory=list)
    #: The last ones closed (completed, failed, cancelled, revoked).
    closed: list[Referral] = field(default_factory=list)
    #: Withdrawal notices sent to the organisation's partners, newest first.
    notices: list[Delivery] = field(default_factory=list)


async def inbox(session: AsyncSession, principal: Principal, *, limit: int = 200) -> Inbox:
    assert principal.organisation is not None
    partners = await organisation_partners(session, principal.organisation)
    found = Inbox({p.id: p.name for p in partners})
    ids = list(found.partner_names)
    if not ids:
        return found
    found.open = list((await session.execute(_open_query(ids, limit))).scalars())
    found.closed = list((await session.execute(_closed_query(ids, 20))).scalars())
    found.notices = list(
        (
            await session.execute(
                select(Delivery)
                .where(Delivery.partner_id.in_(ids), Delivery.event_type.in_(_NOTICES))
                .order_by(Delivery.created_at.desc())
                .limit(50)
            )
        ).scalars()
    )
    return found


def _open_query(partner_ids: list[str], limit: int) -> Select[Any]:
    """Open referrals, most urgent first, newest first within an urgency: the newest
    ``limit`` of each partner and urgency, each read from the open referrals' index
    (a range, in order), then merged; no partner's whole history is read or sorted."""
    newest = [
        select(Referral.id)
        .where(matches(Referral.partner_id, partner), matches(Referral.urgency, urgency), IS_OPEN)
        .order_by(Referral.created_at.desc(), Referral.id.desc())
        .limit(limit)
        .subquery()
        for partner in partner_ids
        for urgency in URGENCIES
    ]
    ids = union_all(*(select(branch.c.id) for branch in newest))
    return (
        select(Referral)
        .where(Referral.id.in_(ids))
        .order_by(_URGENCY_FIRST, Referral.created_at.desc(), Referral.id.desc())
        .limit(limit)
    )


def _closed_query(partner_ids: list[str], limit: int) -> Select[Any]:
    """The last ``limit`` closed, as :func:`_open_query` reads them (by last change)."""
    newest = [
        select(Referral.id)
        .where(matches(Referral.partner_id, partner), IS_CLOSED)
        .order_by(Referral.updated_at.desc(), Referral.id.desc())
        .limit(limit)
        .subquery()
        for partner in partner_ids
    ]
    ids = union_all(*(select(branch.c.id) for branch in newest))
    return (
        select(Referral)
        .where(Referral.id.in_(ids))
        .order_by(Referral.updated_at.desc(), Referral.id.desc())
        .limit(limit)
    )


@dataclass(frozen=True, slots=True)
class Opened:
    referral: Referral
    #: The need-to-know body; None once the referral is revoked (its data may not be read).
    details: Details | None
    consent_withdrawn: bool
    #: What the partner may report next (the state machine's transitions).
    next_statuses: tuple[PartnerStatus, ...]


async def open_referral(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    referral_id: uuid.UUID,
    *,
    request_id: str | None,
) -> Opened:
    """One of the organisation's referrals with its details, the read recorded as a
    disclosure (``personal_data.read``, purpose ``console_view``). Another organisation's
    referral, like a missing one, is 404. A revoked one shows no data at all."""
    referral = await session.get(Referral, referral_id)
    if referral is None or not await owns(session, principal, referral):
        raise NotFound("No referral with this id.")
    screening = await session.get(Screening, referral.screening_id)
    withdrawn = screening is not None and screening.consent_withdrawn_at is not None
    details = None
    if referral.status != ReferralStatus.revoked.value:
        details = await referral_details(
            session,
            settings,
            principal,
            referral_id,
            request_id=request_id,
            purpose="console_view",
            payload_format=PayloadFormat.ruta_json,
        )
    allowed = PARTNER_TRANSITIONS.get(ReferralStatus(referral.status), frozenset())
    ordered = tuple(s for s in PartnerStatus if s in allowed)
    return Opened(referral, details, withdrawn, ordered)


def time_left(referral: Referral, now: datetime) -> float | None:
    """Seconds until the response deadline (negative once passed), while one runs."""
    if referral.deadline_at is None or referral.status not in (
        ReferralStatus.queued.value,
        ReferralStatus.delivered.value,
        ReferralStatus.received.value,
    ):
        return None
    return (referral.deadline_at - now).total_seconds()
