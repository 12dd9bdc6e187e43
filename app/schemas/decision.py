"""What the rules engine decides: the contract between rules, matching, forwarding and audit.

A decision produces at most one referral per service category. Orderings matter: the
highest urgency wins, and the strongest legal basis applies.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.screening import ServiceCategory


class Urgency(StrEnum):
    """Inter-agency tiers: emergency within 24 h, urgent within 72 h, routine within 2 weeks."""

    routine = "routine"
    urgent = "urgent"
    emergency = "emergency"

    @property
    def rank(self) -> int:
        return _URGENCY_RANK[self]


_URGENCY_RANK = {Urgency.routine: 0, Urgency.urgent: 1, Urgency.emergency: 2}


class LegalBasis(StrEnum):
    """Why data may be shared, strongest last: child protection > vital interest > consent."""

    consent = "consent"
    vital_interest = "vital_interest"
    child_protection_duty = "child_protection_duty"

    @property
    def rank(self) -> int:
        return _BASIS_RANK[self]


_BASIS_RANK = {
    LegalBasis.consent: 0,
    LegalBasis.vital_interest: 1,
    LegalBasis.child_protection_duty: 2,
}


class ReferralFlag(StrEnum):
    """Instructions that travel with a referral to the partner."""

    do_not_contact_caregiver = "do_not_contact_caregiver"
    interpreter_needed = "interpreter_needed"
    guardian_needed = "guardian_needed"
    phone_controlled = "phone_controlled"
    treat_as_child = "treat_as_child"
    no_police_report_required = "no_police_report_required"
    assistance_not_conditional = "assistance_not_conditional"


class Reason(BaseModel):
    """One fired rule's contribution to a referral."""

    model_config = ConfigDict(frozen=True)

    rule_id: str
    guideline: str
    text: dict[str, str] = Field(description="The reason by locale, at least 'es' and 'en'.")
    urgency: Urgency
    legal_basis: LegalBasis


class DecidedReferral(BaseModel):
    model_config = ConfigDict(frozen=True)

    service: ServiceCategory
    urgency: Urgency
    legal_basis: LegalBasis
    identifying: bool = Field(
        description="May identifying fields (name, contact) leave for this referral?"
    )
    flags: frozenset[ReferralFlag] = frozenset()
    reasons: tuple[Reason, ...]


class FiredRule(BaseModel):
    model_config = ConfigDict(frozen=True)

    rule_id: str
    guideline: str
    service: ServiceCategory | None
    text: dict[str, str]
    inputs: dict[str, Any] = Field(description="The screening values this rule read.")


class Trace(BaseModel):
    model_config = ConfigDict(frozen=True)

    rule_set_version: str
    rule_set_hash: str = Field(description="sha256 of the rule file's bytes, hex.")
    fired: tuple[FiredRule, ...] = ()
    suppressed: tuple[dict[str, Any], ...] = Field(
        default=(),
        description="Referrals the consent policy withheld, with the reason (no personal data).",
    )


class Decision(BaseModel):
    model_config = ConfigDict(frozen=True)

    referrals: tuple[DecidedReferral, ...]
    non_identifying_notification: bool = Field(
        default=False,
        description="An adult declined consent: only a non-identifying notification may be "
        "sent (statistics / duty to notify), and the person is given information.",
    )
    trace: Trace | None = None
