"""docs/protocol.md as properties: what every decision of the default protocol keeps, for
every screening Hypothesis can build and any moment it is decided at.

These are written from the protocol, not from the rules that implement it: a rule file that
routes a child's protection elsewhere, lets vital interest reach the police, or forgets a
person's expressed need fails here whatever its own scenarios say.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.rules import load_rule_set
from app.rules.facts import Facts, facts_at
from app.schemas.decision import DecidedReferral, Decision, LegalBasis, Recipient, ReferralFlag
from app.schemas.screening import ConsentScope, Need, ScreeningIn, ServiceCategory
from tests.strategies import SCREENED_AT, moments, screenings

RULE_SET = load_rule_set()
PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
P = ServiceCategory.protection


def decide(s: ScreeningIn, now: datetime) -> tuple[Facts, Decision, bool, bool]:
    facts = facts_at(s, now)
    decision = RULE_SET.decide(facts, trace=True)
    _fired, child, lacks = RULE_SET.match(facts.screening)
    return facts, decision, child, lacks


def covered(s: ScreeningIn, scope: ConsentScope) -> bool:
    c = s.consent
    return c.given and not c.lacks_capacity and scope in c.scopes


def by_key(decision: Decision) -> dict[tuple[ServiceCategory, Recipient], DecidedReferral]:
    return {(r.service, r.recipient): r for r in decision.referrals}


@PROPERTY
@given(screenings(), moments())
def test_law_enforcement_only_with_an_adults_own_scope(s: ScreeningIn, now: datetime) -> None:
    """Rule 10: never as a fallback, never on vital interest, never for a child, never
    without the person's law_enforcement scope, and only when the person wants to report."""
    _, decision, child, _ = decide(s, now)
    for r in decision.referrals:
        if r.recipient is Recipient.law_enforcement:
            assert not child
            assert covered(s, ConsentScope.law_enforcement)
            assert r.legal_basis is LegalBasis.consent
            assert s.legal.wants_police_report
    if s.legal.wants_police_report and not child and covered(s, ConsentScope.law_enforcement):
        assert (P, Recipient.law_enforcement) in by_key(decision)


@PROPERTY
@given(screenings(), moments())
def test_a_childs_protection_goes_to_the_authority(s: ScreeningIn, now: datetime) -> None:
    """Rule 1: a presumed minor always has a protection referral to the child-protection
    authority, at least urgent, on child-protection duty; a shelter only beside it; no
    protection referral to anyone else."""
    _, decision, child, _ = decide(s, now)
    keys = by_key(decision)
    protection = {recipient for service, recipient in keys if service is P}
    if child:
        authority = keys[P, Recipient.child_protection_authority]
        assert authority.legal_basis is LegalBasis.child_protection_duty
        assert authority.urgency.rank >= 1
        assert protection <= {Recipient.child_protection_authority, Recipient.shelter}
        assert all(ReferralFlag.treat_as_child in r.flags for r in decision.referrals)
        assert decision.non_identifying_notification is False
    else:
        assert not protection & {Recipient.child_protection_authority, Recipient.shelter}


@PROPERTY
@given(screenings(), moments())
def test_bases_follow_consent(s: ScreeningIn, now: datetime) -> None:
    """Rules 4, 5, 14: a referral on consent is covered by the person's consent and
    identifies only with consent to share; vital interest and child-protection duty
    identify; child-protection duty only for a child; nothing withheld is also sent."""
    _, decision, child, _ = decide(s, now)
    for r in decision.referrals:
        assert r.reasons
        assert r.urgency.rank == max(x.urgency.rank for x in r.reasons)
        if r.legal_basis is LegalBasis.consent:
            scope = (
                ConsentScope.law_enforcement
                if r.recipient is Recipient.law_enforcement
                else ConsentScope(r.service.value)
            )
            assert covered(s, scope)
            assert r.identifying is s.consent.share_identifying
        else:
            assert r.identifying is True
        if r.legal_basis is LegalBasis.child_protection_duty:
            assert child
        if ReferralFlag.life_at_risk in r.flags:
            assert r.urgency.value == "emergency"
    assert decision.trace is not None
    sent = {(r.service.value, r.recipient.value) for r in decision.referrals}
    for entry in decision.trace.suppressed:
        assert (entry["service"], entry.get("recipient", "provider")) not in sent
    if s.consent.given or child:
        assert decision.non_identifying_notification is False


@PROPERTY
@given(screenings(), moments())
def test_every_identified_victim_is_offered_psychosocial_support(
    s: ScreeningIn, now: datetime
) -> None:
    """Rule 9: a positive trafficking indicator, with consent covering it, gives a
    psychological referral even without a mental-health finding."""
    _, decision, _, lacks = decide(s, now)
    indicator = bool(s.indicators.exploitation_types or s.indicators.control_methods)
    if indicator and (covered(s, ConsentScope.psychological) or lacks):
        assert (ServiceCategory.psychological, Recipient.provider) in by_key(decision)


@PROPERTY
@given(screenings(), moments())
def test_what_the_person_asks_for_counts(s: ScreeningIn, now: datetime) -> None:
    """Rule 13: an expressed need produces that referral when consent covers it."""
    _, decision, child, lacks = decide(s, now)
    services = {r.service for r in decision.referrals}
    asked = {
        Need.medical_care: ServiceCategory.medical,
        Need.psychological_support: ServiceCategory.psychological,
        Need.legal_advice: ServiceCategory.legal,
        Need.documents: ServiceCategory.legal,
        Need.shelter: ServiceCategory.protection,
    }
    for need, service in asked.items():
        if need in s.needs_expressed and (
            covered(s, ConsentScope(service.value)) or lacks or (child and service is P)
        ):
            assert service in services, need


@PROPERTY
@given(screenings(), moments())
def test_sexual_violence_timing_runs_to_the_decision(s: ScreeningIn, now: datetime) -> None:
    """Rule 6: the hours run from the event to the decision; within 72 h an emergency,
    within 120 h at least urgent, later at least routine: never without a medical
    referral when consent (or a child's protection, or lack of capacity) covers it."""
    facts, decision, child, lacks = decide(s, now)
    hours = s.health.hours_since_sexual_violence
    if hours is None:
        return
    elapsed = max((now - s.source.screened_at).total_seconds() / 3600, 0)
    read = facts.screening.health.hours_since_sexual_violence
    assert read is not None
    assert abs(read - min(hours + elapsed, 24 * 365 * 5)) < 0.02
    medical = by_key(decision).get((ServiceCategory.medical, Recipient.provider))
    if covered(s, ConsentScope.medical) or child or lacks:
        assert medical is not None
        if read <= 72:
            assert medical.urgency.value == "emergency"
        elif read <= 120:
            assert medical.urgency.rank >= 1
    if child and read <= 120:
        assert medical is not None
        assert medical.urgency.value == "emergency"
        assert medical.legal_basis is LegalBasis.child_protection_duty


@PROPERTY
@given(screenings(), moments())
def test_pregnancy_and_infection_are_at_least_urgent(s: ScreeningIn, now: datetime) -> None:
    """Rule 7."""
    _, decision, _, lacks = decide(s, now)
    if (s.health.pregnant or s.health.sti_symptoms) and (covered(s, ConsentScope.medical) or lacks):
        medical = by_key(decision)[ServiceCategory.medical, Recipient.provider]
        assert medical.urgency.rank >= 1


@settings(max_examples=200, deadline=None)
@given(screenings(), st.integers(0, 24 * 20))
def test_a_later_decision_is_never_less_urgent_for_the_same_sexual_violence(
    s: ScreeningIn, hours_later: int
) -> None:
    """Time only closes windows: deciding later never makes the post-exposure care more
    urgent than deciding at once, and the trace says how many hours were added."""
    _, now_decision, _, _ = decide(s, SCREENED_AT)
    later = SCREENED_AT + timedelta(hours=hours_later)
    _, later_decision, _, _ = decide(s, later)
    if s.health.hours_since_sexual_violence is not None and hours_later:
        assert later_decision.trace is not None
        adjusted = later_decision.trace.adjustments["health.hours_since_sexual_violence"]
        assert adjusted["elapsed_hours"] == hours_later
    first = by_key(now_decision).get((ServiceCategory.medical, Recipient.provider))
    second = by_key(later_decision).get((ServiceCategory.medical, Recipient.provider))
    only_violence = all(
        r.rule_id.startswith(("sexual-violence", "child-recent", "child-sexual"))
        for r in (first.reasons if first else ())
    )
    if first is not None and second is not None and only_violence:
        assert second.urgency.rank <= first.urgency.rank


def test_every_fired_rule_reads_only_non_personal_fields() -> None:
    personal = ("subject.name", "subject.contact", "subject.date_of_birth", "safety.safe", "notes")

    @settings(max_examples=200, deadline=None)
    @given(screenings(), moments())
    def check(s: ScreeningIn, now: datetime) -> None:
        _, decision, _, _ = decide(s, now)
        assert decision.trace is not None
        for fired in decision.trace.fired:
            assert not any(key.startswith(personal) for key in fired.inputs)
        born = s.subject.date_of_birth
        if born is not None:
            assert born.isoformat() not in decision.trace.model_dump_json()

    check()
