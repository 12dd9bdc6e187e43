"""The consent policy step: who may be referred, identifying or not, and what is recorded."""

from __future__ import annotations

from typing import Any

from app.rules import load_rule_set
from app.schemas.decision import LegalBasis, Recipient
from app.schemas.screening import ScreeningIn, ServiceCategory
from tests.factories import adult_consenting, screening

RULE_SET = load_rule_set()
NO_CONSENT: dict[str, Any] = {"given": False, "scopes": [], "share_identifying": False}


def decide(body: dict[str, Any]) -> Any:
    return RULE_SET.evaluate(ScreeningIn.model_validate(body), trace=True)


def test_adult_without_consent_gets_no_identifying_referral() -> None:
    decision = decide(
        adult_consenting(
            consent=NO_CONSENT, safety__trafficker_nearby=False, safety__can_return_safely=True
        )
    )
    assert all(
        not r.identifying or r.legal_basis is not LegalBasis.consent for r in decision.referrals
    )
    assert all(r.legal_basis is not LegalBasis.consent for r in decision.referrals)
    assert decision.non_identifying_notification is True
    reasons = {s["reason"] for s in decision.trace.suppressed}
    assert reasons == {"no_consent"}
    for entry in decision.trace.suppressed:
        assert entry["rule_ids"]
        assert set(entry["text"]) >= {"es", "en"}


def test_vital_interest_override_is_recorded_in_the_trace() -> None:
    decision = decide(adult_consenting(consent=NO_CONSENT, safety__immediate_danger=True))
    protection = next(r for r in decision.referrals if r.service is ServiceCategory.protection)
    assert protection.legal_basis is LegalBasis.vital_interest
    assert protection.identifying is True
    overrides = [f for f in decision.trace.fired if f.rule_id.startswith("consent-policy/")]
    assert [(o.rule_id, o.service) for o in overrides] == [
        ("consent-policy/vital-interest", ServiceCategory.protection)
    ]
    assert overrides[0].inputs["consent.given"] is False


def test_lack_of_capacity_override_is_recorded() -> None:
    consent = {**NO_CONSENT, "lacks_capacity": True}
    decision = decide(adult_consenting(consent=consent))
    assert decision.referrals
    assert decision.non_identifying_notification is False
    kinds = {f.rule_id for f in decision.trace.fired if f.rule_id.startswith("consent-policy/")}
    assert "consent-policy/lacks-capacity" in kinds


def test_child_is_protected_regardless_of_consent_and_override_recorded() -> None:
    decision = decide(screening(consent=NO_CONSENT))
    protection = next(r for r in decision.referrals if r.service is ServiceCategory.protection)
    assert protection.legal_basis is LegalBasis.child_protection_duty
    assert decision.non_identifying_notification is False
    kinds = {f.rule_id for f in decision.trace.fired if f.rule_id.startswith("consent-policy/")}
    assert "consent-policy/child-protection-duty" in kinds


def test_scopes_limit_services_and_suppressed_are_recorded() -> None:
    decision = decide(adult_consenting(consent__scopes=["medical"]))
    services = {r.service for r in decision.referrals}
    assert ServiceCategory.legal not in services
    assert ServiceCategory.psychological not in services
    suppressed = {s["service"]: s["reason"] for s in decision.trace.suppressed}
    assert suppressed["legal"] == "outside_scope"


def test_identifying_only_with_share_identifying() -> None:
    shared = decide(adult_consenting(consent__share_identifying=True, safety={}))
    not_shared = decide(adult_consenting(consent__share_identifying=False, safety={}))
    assert all(r.identifying for r in shared.referrals)
    assert not any(
        r.identifying for r in not_shared.referrals if r.legal_basis is LegalBasis.consent
    )


def test_law_enforcement_only_with_its_scope_and_the_wish_to_report() -> None:
    """Consent to the police is not consent to a service: it allows the law-enforcement
    referral the person asked for, and nothing else."""
    decision = decide(
        adult_consenting(
            consent__scopes=["law_enforcement"], legal__wants_police_report=True, safety={}
        )
    )
    [referral] = decision.referrals
    assert referral.recipient is Recipient.law_enforcement
    assert referral.legal_basis is LegalBasis.consent
    assert {s["reason"] for s in decision.trace.suppressed} == {"outside_scope"}


def test_wish_to_report_without_the_scope_is_withheld_and_explained() -> None:
    decision = decide(adult_consenting(legal__wants_police_report=True, safety={}))
    assert all(r.recipient is not Recipient.law_enforcement for r in decision.referrals)
    [withheld] = [s for s in decision.trace.suppressed if s.get("recipient")]
    assert withheld["recipient"] == "law_enforcement"
    assert withheld["reason"] == "law_enforcement_needs_consent"
    assert "police" in withheld["text"]["en"]


def test_no_consent_without_any_need_still_notifies_non_identifying() -> None:
    body = adult_consenting(consent=NO_CONSENT)
    for group in ("safety", "indicators", "health", "mental_health", "legal"):
        body.pop(group, None)
    body["subject"]["preferred_language"] = "es"
    decision = decide(body)
    assert decision.referrals == ()
    assert decision.non_identifying_notification is True
