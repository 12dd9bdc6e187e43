"""The consent policy: the step after aggregation that decides what may leave, and how.

It follows docs/protocol.md rules 1, 4, 5, 10 and 14:

- A referral whose strongest basis is ``child_protection_duty`` (only rules that require the
  rule file's *child* definition may declare it) goes ahead regardless of consent.
- A referral whose strongest basis is ``vital_interest`` (risk to life) goes ahead without
  consent, and the override is recorded.
- A person who lacks capacity to consent (the *lacks_capacity* definition) is referred on
  ``vital_interest`` for the services the rules found, and that override is recorded.
- Otherwise a referral needs ``consent.given`` and its service in ``consent.scopes``; if not,
  it is suppressed and recorded in ``trace.suppressed``.
- A **law-enforcement** referral needs an adult's consent with the ``law_enforcement``
  scope, always: no basis overrides it (not vital interest, not lack of capacity, not
  child-protection duty), and a presumed minor never gets one (the child-protection
  authority, which always receives the child's referral, decides on a report with the
  child). Its basis is always ``consent``.
- ``identifying`` is true only with ``consent.share_identifying``, or under child-protection
  duty or vital interest.
- An adult who declined (and does not lack capacity) gets ``non_identifying_notification``
  when a referral was suppressed for that reason, or when no referral goes ahead at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.rules.syntax import ConsentPolicy
from app.schemas.decision import FiredRule, LegalBasis, Reason, Recipient, ReferralFlag, Urgency
from app.schemas.screening import Consent, ConsentScope, ServiceCategory

_URGENCY = (Urgency.routine, Urgency.urgent, Urgency.emergency)
_BASIS = (LegalBasis.consent, LegalBasis.vital_interest, LegalBasis.child_protection_duty)
_ORDER = (
    ServiceCategory.protection,
    ServiceCategory.medical,
    ServiceCategory.psychological,
    ServiceCategory.legal,
)
#: A decision's referrals, in the order they are listed: service, then recipient.
KEY_ORDER = tuple(
    (service, recipient)
    for service in _ORDER
    for recipient in sorted(Recipient, key=lambda r: r.rank)
)
#: A decided referral's key: at most one referral per (service, recipient).
Key = tuple[ServiceCategory, Recipient]
CHILD_PROTECTION = "child_protection_duty"
VITAL_INTEREST = "vital_interest"
LACKS_CAPACITY = "lacks_capacity"
SCOPE_OF = {service: ConsentScope(service.value) for service in ServiceCategory}
#: (service, recipient, urgency rank, legal basis, identifying, flags, reasons)
PlainReferral = tuple[
    ServiceCategory, Recipient, int, LegalBasis, bool, frozenset[ReferralFlag], list[Reason]
]
NO_CONSENT = "no_consent"
OUTSIDE_SCOPE = "outside_scope"
LAW_ENFORCEMENT_NEEDS_CONSENT = "law_enforcement_needs_consent"
MINOR_LAW_ENFORCEMENT = "minor_law_enforcement"


@dataclass
class ConsentOutcome:
    policy: ConsentPolicy
    non_identifying_notification: bool = False
    suppressed: list[dict[str, Any]] = field(default_factory=list)
    overridden: list[tuple[str, ServiceCategory]] = field(default_factory=list)

    def overrides(self, screening: Any) -> list[FiredRule]:
        """Each consent override as a trace entry (once per kind and service), with the
        consent values it read."""
        consent = screening.consent
        inputs = {
            "consent.given": consent.given,
            "consent.scopes": sorted(s.value for s in consent.scopes),
            "consent.lacks_capacity": consent.lacks_capacity,
        }
        return [
            FiredRule(
                rule_id=f"consent-policy/{kind.replace('_', '-')}",
                guideline=self.policy.guideline,
                service=service,
                text=self.policy.texts[kind],
                inputs=inputs,
            )
            for kind, service in dict.fromkeys(self.overridden)
        ]


class ConsentStep:
    def __init__(self, policy: ConsentPolicy) -> None:
        self.policy = policy

    def apply(
        self,
        consent: Consent,
        by_key: dict[Key, list[Any]],
        every_referral: frozenset[ReferralFlag],
        child: bool,
        lacks_capacity: bool,
        trace: bool,
    ) -> tuple[list[PlainReferral], ConsentOutcome]:
        outcome = ConsentOutcome(self.policy)
        referrals: list[PlainReferral] = []
        declined = False
        for key in KEY_ORDER:
            agg = by_key.get(key)
            if agg is None:
                continue
            service, recipient = key
            if recipient is Recipient.law_enforcement:
                decided = self._law_enforcement(consent, child, lacks_capacity)
            else:
                decided = self._basis(consent, key, agg[1], lacks_capacity, outcome, trace)
            if isinstance(decided, str):
                declined = declined or decided == NO_CONSENT
                if trace:
                    outcome.suppressed.append(self._suppressed(key, agg, decided))
                continue
            basis, identifying = decided
            urgency_rank, _, reasons, flags = agg
            referrals.append(
                (
                    service,
                    recipient,
                    urgency_rank,
                    basis,
                    identifying,
                    flags | every_referral,
                    reasons,
                )
            )
        outcome.non_identifying_notification = (
            not child and not consent.given and not lacks_capacity and (declined or not referrals)
        )
        return referrals, outcome

    @staticmethod
    def _law_enforcement(
        consent: Consent, child: bool, lacks_capacity: bool
    ) -> tuple[LegalBasis, bool] | str:
        """Only an adult's own consent with the law_enforcement scope: no override."""
        if child:
            return MINOR_LAW_ENFORCEMENT
        if (
            lacks_capacity
            or not consent.given
            or ConsentScope.law_enforcement not in consent.scopes
        ):
            return LAW_ENFORCEMENT_NEEDS_CONSENT
        return LegalBasis.consent, consent.share_identifying

    @staticmethod
    def _basis(
        consent: Consent,
        key: Key,
        basis_rank: int,
        lacks_capacity: bool,
        outcome: ConsentOutcome,
        trace: bool,
    ) -> tuple[LegalBasis, bool] | str:
        """The referral's basis and whether it may identify the person, or why it is withheld."""
        service = key[0]
        covered = consent.given and not lacks_capacity and SCOPE_OF[service] in consent.scopes
        if basis_rank == 2:
            if trace and not covered:
                outcome.overridden.append((CHILD_PROTECTION, service))
            return LegalBasis.child_protection_duty, True
        if basis_rank == 1:
            if trace and not covered:
                outcome.overridden.append((VITAL_INTEREST, service))
            return LegalBasis.vital_interest, True
        if lacks_capacity:
            if trace:
                outcome.overridden.append((LACKS_CAPACITY, service))
            return LegalBasis.vital_interest, True
        if covered:
            return LegalBasis.consent, consent.share_identifying
        return NO_CONSENT if not consent.given else OUTSIDE_SCOPE

    def _suppressed(self, key: Key, agg: list[Any], why: str) -> dict[str, Any]:
        service, recipient = key
        urgency_rank, _, reasons, _ = agg
        entry: dict[str, Any] = {
            "service": service.value,
            "urgency": _URGENCY[urgency_rank].value,
            "reason": why,
            "rule_ids": [r.rule_id for r in reasons],
            "text": self.policy.texts[why],
        }
        if recipient is not Recipient.provider:
            entry["recipient"] = recipient.value
        return entry
