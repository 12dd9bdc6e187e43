"""Properties every decision of the default protocol keeps, over thousands of screenings."""

from __future__ import annotations

import pytest

from app.rules import load_rule_set
from app.rules.corpus import generate_screenings
from app.schemas.decision import Decision, LegalBasis
from app.schemas.screening import ConsentScope, ScreeningIn

RULE_SET = load_rule_set()
SCREENINGS = generate_screenings(3_000, seed=5)


def decide(s: ScreeningIn) -> Decision:
    return RULE_SET.evaluate(s, trace=True)


@pytest.mark.parametrize("chunk", range(3))
def test_decision_invariants(chunk: int) -> None:
    for s in SCREENINGS[chunk * 1000 : (chunk + 1) * 1000]:
        decision = decide(s)
        assert decision.trace is not None
        consent = s.consent
        services = [r.service for r in decision.referrals]
        assert len(services) == len(set(services)), "one referral per service"
        fired_ids = {f.rule_id for f in decision.trace.fired}
        child = "minor-protection" in fired_ids
        for r in decision.referrals:
            assert r.reasons, "a referral always has a reason"
            assert r.urgency.rank == max(x.urgency.rank for x in r.reasons)
            strongest = max(x.legal_basis.rank for x in r.reasons)
            if r.legal_basis is LegalBasis.consent:
                assert strongest == 0
                assert consent.given
                assert not consent.lacks_capacity
                assert ConsentScope(r.service.value) in consent.scopes
                assert r.identifying is consent.share_identifying
            else:
                assert r.identifying is True
                assert r.legal_basis.rank >= strongest
            if r.legal_basis is LegalBasis.child_protection_duty:
                assert child, "child-protection duty only for a presumed minor"
        if child:
            assert decision.non_identifying_notification is False
            assert "protection" in {r.service.value for r in decision.referrals}
        if consent.given:
            assert decision.non_identifying_notification is False
        for entry in decision.trace.suppressed:
            assert entry["service"] not in {r.service.value for r in decision.referrals}
            assert entry["reason"] in {"no_consent", "outside_scope"}


def test_every_fired_rule_reads_only_non_personal_fields() -> None:
    personal = ("subject.name", "subject.contact", "subject.date_of_birth", "safety.safe", "notes")
    for s in SCREENINGS[:500]:
        decision = decide(s)
        assert decision.trace is not None
        for fired in decision.trace.fired:
            assert not any(key.startswith(personal) for key in fired.inputs)
