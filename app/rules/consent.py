"""The consent policy: the step after aggregation that decides what may leave, and how.

It follows domain.md rules 1, 4, 5, 10 and 14:

- A referral whose strongest basis is ``child_protection_duty`` (only rules that require the
  rule file's *child* definition may declare it) goes ahead regardless of consent.
- A referral whose strongest basis is ``vital_interest`` (risk to life) goes ahead without
  consent, and the override is recorded.
- A person who lacks capacity to consent (the *lacks_capacity* definition) is referred on
  ``vital_interest`` for the services the rules found, and that override is recorded.
- Otherwise a referral needs ``consent.given`` and its service in ``consent.scopes``; if not,
  it is suppressed and recorded in ``trace.suppressed``.
- ``identifying`` is true only with ``consent.share_identifying``, or under child-protection
  duty or vital interest.
- An adult who declined (and does not lack capacity) gets ``non_identifying_notification``
  when a referral was suppressed for that reason, or when no referral goes ahead at all.

The ``law_enforcement`` scope is never inferred: it is not a service category, so nothing here
can create a police referral; partner matching must read ``consent.scopes`` for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.rules.syntax import ConsentPolicy
from app.schemas.decision import FiredRule, LegalBasis, Reason, ReferralFlag, Urgency
from app.schemas.screening import Consent, ConsentScope, ServiceCategory

_URGENCY = (Urgency.routine, Urgency.urgent, Urgency.emergency)
_BASIS = (LegalBasis.consent, LegalBasis.vital_interest, LegalBasis.child_protection_duty)
_ORDER = (
    ServiceCategory.protection,
    ServiceCategory.medical,
    ServiceCategory.psychological,
    ServiceCategory.legal,
)
CHILD_PROTECTION = "child_protection_duty"
VITAL_INTEREST = "vital_interest"
LACKS_CAPACITY = "lacks_capacity"
SCOPE_OF = {service: ConsentScope(service.value) for service in ServiceCategory}
#: (service, urgency rank, legal basis, identifying, flags, reasons)
PlainReferral = tuple[ServiceCategory, int, LegalBasis, bool, frozenset[ReferralFlag], list[Reason]]
NO_CONSENT = "no_consent"
OUTSIDE_SCOPE = "outside_scope"


@dataclass
class ConsentOutcome:
    policy: ConsentPolicy
    non_identifying_notification: bool = False
    suppressed: list[dict[str, Any]] = field(default_factory=list)
    overridden: list[tuple[str, ServiceCategory]] = field(default_factory=list)

    def overrides(self, screening: Any) -> list[FiredRule]:
        """Each consent override as a trace entry, with the consent values it read."""
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
            for kind, service in self.overridden
        ]


class ConsentStep:
    def __init__(self, policy: ConsentPolicy) -> None:
        self.policy = policy

    def apply(
        self,
        consent: Consent,
        by_service: dict[ServiceCategory, list[Any]],
        every_referral: frozenset[ReferralFlag],
        child: bool,
        lacks_capacity: bool,
        trace: bool,
    ) -> tuple[list[PlainReferral], ConsentOutcome]:
        outcome = ConsentOutcome(self.policy)
        given = consent.given and not lacks_capacity
        scopes = consent.scopes
        share = consent.share_identifying
        referrals: list[PlainReferral] = []
        declined = False
        for service in _ORDER:
            agg = by_service.get(service)
            if agg is None:
                continue
            urgency_rank, basis_rank, reasons, flags = agg
            covered = given and SCOPE_OF[service] in scopes
            if basis_rank == 2:
                basis, identifying = LegalBasis.child_protection_duty, True
                if trace and not covered:
                    outcome.overridden.append((CHILD_PROTECTION, service))
            elif basis_rank == 1:
                basis, identifying = LegalBasis.vital_interest, True
                if trace and not covered:
                    outcome.overridden.append((VITAL_INTEREST, service))
            elif lacks_capacity:
                basis, identifying = LegalBasis.vital_interest, True
                if trace:
                    outcome.overridden.append((LACKS_CAPACITY, service))
            elif covered:
                basis, identifying = LegalBasis.consent, share
            else:
                why = NO_CONSENT if not consent.given else OUTSIDE_SCOPE
                declined = declined or why == NO_CONSENT
                if trace:
                    outcome.suppressed.append(
                        {
                            "service": service.value,
                            "urgency": _URGENCY[urgency_rank].value,
                            "reason": why,
                            "rule_ids": [r.rule_id for r in reasons],
                            "text": self.policy.texts[why],
                        }
                    )
                continue
            referrals.append(
                (service, urgency_rank, basis, identifying, flags | every_referral, reasons)
            )
        outcome.non_identifying_notification = (
            not child and not consent.given and not lacks_capacity and (declined or not referrals)
        )
        return referrals, outcome
