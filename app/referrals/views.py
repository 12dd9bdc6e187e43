"""What the API shows of a decision and its referrals (no personal data)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Decision, PartnerRow, Referral
from app.rules.consent import KEY_ORDER

if TYPE_CHECKING:
    from app.referrals.planning import NewDecision, NewReferral


def referral_view(
    referral: Referral | NewReferral | Row[Any], partner_names: dict[str, str]
) -> dict[str, Any]:
    """A referral as the API shows it; ``referral`` may be a row of those columns (the
    referral log reads no more)."""
    return {
        "id": str(referral.id),
        "service": referral.service,
        "recipient": referral.recipient,
        "urgency": referral.urgency,
        "legal_basis": referral.legal_basis,
        "identifying": referral.identifying,
        "flags": list(referral.flags),
        "status": referral.status,
        "partner": (
            {"id": referral.partner_id, "name": partner_names.get(referral.partner_id, "")}
            if referral.partner_id
            else None
        ),
        "respond_by": referral.deadline_at.isoformat() if referral.deadline_at else None,
        "needs_human": referral.needs_human,
        "human_reason": referral.human_reason,
        "data_categories": list(referral.data_categories),
        "reasons": list(referral.reasons),
    }


async def partner_names(session: AsyncSession, ids: set[str]) -> dict[str, str]:
    if not ids:
        return {}
    rows = await session.execute(
        select(PartnerRow.id, PartnerRow.name).where(PartnerRow.id.in_(ids))
    )
    return {row.id: row.name for row in rows}


async def decision_view(session: AsyncSession, screening_id: uuid.UUID) -> dict[str, Any] | None:
    decision = (
        await session.execute(select(Decision).where(Decision.screening_id == screening_id))
    ).scalar_one_or_none()
    if decision is None:
        return None
    referrals = list(
        (
            await session.execute(select(Referral).where(Referral.screening_id == screening_id))
        ).scalars()
    )
    names = await partner_names(session, {r.partner_id for r in referrals if r.partner_id})
    return decision_dict(decision, referrals, names)


def decision_dict(
    decision: Decision | NewDecision,
    referrals: Iterable[Referral | NewReferral],
    partner_names: dict[str, str],
) -> dict[str, Any]:
    """The decision as the API shows it; referrals in the protocol's order (protection
    first, and within a service the child-protection authority first)."""
    return {
        "id": str(decision.id),
        "rule_set": {"version": decision.rule_set_version, "sha256": decision.rule_set_hash},
        "non_identifying_notification": decision.non_identifying_notification,
        "notification_recipient": decision.notification_partner_id,
        "referrals": [
            referral_view(r, partner_names)
            for r in sorted(referrals, key=lambda r: _ORDER[r.service, r.recipient])
        ],
        "trace": decision.trace,
    }


#: (service, recipient) -> position in a decision (see app.rules.consent.KEY_ORDER).
_ORDER = {(s.value, r.value): i for i, (s, r) in enumerate(KEY_ORDER)}
