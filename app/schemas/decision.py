"""What the rules engine decides: the contract between rules, matching, forwarding and audit.

A decision holds at most one referral per **(service, recipient)**: per service category,
and within it per kind of partner that may receive it (docs/protocol.md, "The decision").
For most services that is one referral per service, to an ordinary provider. Protection is
the exception: a child's protection referral goes to the child-protection authority and a
shelter may get a second one; an adult who consents to the police gets a law-enforcement
referral beside the protection one. Orderings matter: the highest urgency wins, and the
strongest legal basis applies.
"""

from __future__ import annotations

from datetime import datetime
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


class PartnerRole(StrEnum):
    """What kind of organisation a partner is, within its service categories (HSDS-style
    attribute of the directory entry). Matching reads it: consent scopes and the protocol
    limit which roles may receive a referral (docs/protocol.md, "Partner roles")."""

    child_protection_authority = "child_protection_authority"
    law_enforcement = "law_enforcement"
    shelter = "shelter"
    health_facility = "health_facility"
    legal_aid = "legal_aid"
    psychosocial = "psychosocial"
    #: Receives non-identifying notifications (statistics, duty to notify), never a referral.
    notification_recipient = "notification_recipient"


#: The ordinary providers: any of them may take a referral addressed to ``provider``.
PROVIDER_ROLES = frozenset(
    {
        PartnerRole.shelter,
        PartnerRole.health_facility,
        PartnerRole.legal_aid,
        PartnerRole.psychosocial,
    }
)


class Recipient(StrEnum):
    """Which kind of partner a decided referral may go to. Matching never widens it:
    fallback picks another partner of the same kind, never another kind."""

    #: An ordinary provider of the service (shelter, health facility, legal aid, psychosocial).
    provider = "provider"
    #: The child-protection authority (UPE, DEMUNA): every presumed minor's protection referral.
    child_protection_authority = "child_protection_authority"
    #: A shelter, as a child's additional protection referral beside the authority's.
    shelter = "shelter"
    #: The police unit or a prosecutor: only with an adult's ``law_enforcement`` consent.
    law_enforcement = "law_enforcement"

    @property
    def rank(self) -> int:
        return _RECIPIENT_RANK[self]

    def accepts(self, role: PartnerRole) -> bool:
        """Whether a partner of ``role`` may receive a referral addressed to this recipient."""
        if self is Recipient.provider:
            return role in PROVIDER_ROLES
        return role.value == self.value


_RECIPIENT_RANK = {
    Recipient.child_protection_authority: 0,
    Recipient.provider: 1,
    Recipient.shelter: 2,
    Recipient.law_enforcement: 3,
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
    #: Life is at risk (suicidal plan or attempt, psychosis, life-threatening injury,
    #: immediate danger): the partner has 2 hours to acknowledge, not 24.
    life_at_risk = "life_at_risk"


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
    recipient: Recipient = Field(
        default=Recipient.provider,
        description="Which kind of partner may receive it: an ordinary provider, the "
        "child-protection authority, a shelter (a child's additional referral) or law "
        "enforcement (only with the person's law_enforcement consent).",
    )
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
    facts_as_of: datetime | None = Field(
        default=None,
        description="The moment the rules read the facts at (the decision's time): clinical "
        "windows run from the event to now, not to the screening.",
    )
    adjustments: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Facts read differently from what the screening says, and why: the hours "
        "since sexual violence with the time elapsed since the screening added; the age from "
        "a date of birth, or the lower age when the stated age and the date of birth disagree.",
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
