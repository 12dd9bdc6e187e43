"""The referral state machine.

Partners report with FHIR Task status codes. Ruta adds the states it owns: ``queued``
(waiting for delivery), ``held`` (no eligible partner: flagged for a person), ``escalated``
(every partner declined or let the deadline pass: a person must act), ``revoked``
(consent withdrawn) and ``undeliverable`` (delivery dead-lettered: a person must act).

A referral ends in exactly one terminal state. ``rejected`` is never where a referral
stays: it moves on to the next eligible partner (back to ``queued``) or to ``escalated``.
"""

from __future__ import annotations

from enum import StrEnum


class ReferralStatus(StrEnum):
    queued = "queued"
    held = "held"
    delivered = "delivered"
    received = "received"
    accepted = "accepted"
    in_progress = "in-progress"
    on_hold = "on-hold"
    rejected = "rejected"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"
    escalated = "escalated"
    revoked = "revoked"
    undeliverable = "undeliverable"


class PartnerStatus(StrEnum):
    """What a partner may report (FHIR Task.status subset used for referrals)."""

    received = "received"
    accepted = "accepted"
    rejected = "rejected"
    in_progress = "in-progress"
    on_hold = "on-hold"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


class RejectReason(StrEnum):
    no_capacity = "no_capacity"
    not_eligible = "not_eligible"
    out_of_area = "out_of_area"
    could_not_contact = "could_not_contact"
    declined_by_person = "declined_by_person"


TERMINAL = frozenset(
    {
        ReferralStatus.completed,
        ReferralStatus.failed,
        ReferralStatus.cancelled,
        ReferralStatus.escalated,
        ReferralStatus.revoked,
        ReferralStatus.undeliverable,
    }
)

#: States in which the assigned partner has the referral and may report on it. ``queued``
#: is included: a partner's "received" can overtake the worker recording the 2xx.
_WITH_PARTNER = frozenset(
    {
        ReferralStatus.queued,
        ReferralStatus.delivered,
        ReferralStatus.received,
        ReferralStatus.accepted,
        ReferralStatus.in_progress,
        ReferralStatus.on_hold,
    }
)

#: Partner-reported transitions: from -> allowed reports.
PARTNER_TRANSITIONS: dict[ReferralStatus, frozenset[PartnerStatus]] = {
    ReferralStatus.queued: frozenset(
        {PartnerStatus.received, PartnerStatus.accepted, PartnerStatus.rejected}
    ),
    ReferralStatus.delivered: frozenset(
        {PartnerStatus.received, PartnerStatus.accepted, PartnerStatus.rejected}
    ),
    ReferralStatus.received: frozenset(
        {
            PartnerStatus.accepted,
            PartnerStatus.rejected,
            PartnerStatus.in_progress,
            PartnerStatus.on_hold,
        }
    ),
    ReferralStatus.accepted: frozenset(
        {
            PartnerStatus.in_progress,
            PartnerStatus.on_hold,
            PartnerStatus.completed,
            PartnerStatus.failed,
            PartnerStatus.cancelled,
        }
    ),
    ReferralStatus.in_progress: frozenset(
        {
            PartnerStatus.on_hold,
            PartnerStatus.completed,
            PartnerStatus.failed,
            PartnerStatus.cancelled,
        }
    ),
    ReferralStatus.on_hold: frozenset(
        {
            PartnerStatus.in_progress,
            PartnerStatus.completed,
            PartnerStatus.failed,
            PartnerStatus.cancelled,
        }
    ),
}

#: Statuses in which the partner has not yet taken the referral on: a missed response
#: deadline here moves it to the next partner.
AWAITING_RESPONSE = frozenset(
    {ReferralStatus.queued, ReferralStatus.delivered, ReferralStatus.received}
)

#: Statuses a consent withdrawal revokes (a child's protection referral excepted).
REVOCABLE = frozenset(_WITH_PARTNER | {ReferralStatus.held})


def partner_may_report(current: ReferralStatus, reported: PartnerStatus) -> bool:
    return reported in PARTNER_TRANSITIONS.get(current, frozenset())


def is_terminal(status: ReferralStatus) -> bool:
    return status in TERMINAL
