"""docs/protocol.md rule 13 as properties of matching, over generated screenings, directories
and moments: whatever the directory holds and whenever the referral is routed, and however
many partners decline in turn.

- No law-enforcement partner ever receives a referral that is not addressed to law
  enforcement (which the decision only makes with an adult's law_enforcement scope), in the
  first match or in any fallback.
- A child's protection referral only ever goes to the child-protection authority (or, for
  the additional one, a shelter).
- No emergency goes to a closed partner without an escalation, and an escalation means no
  eligible partner was open.
"""

from __future__ import annotations

from datetime import datetime

from hypothesis import HealthCheck, given, settings

from app.partners.directory import Partner, PartnerStatus
from app.partners.matching import (
    Escalation,
    MatchResult,
    PassOverReason,
    SubjectFacts,
    match,
)
from app.rules import load_rule_set
from app.rules.facts import facts_at
from app.schemas.decision import DecidedReferral, PartnerRole, Recipient, Urgency
from app.schemas.screening import ConsentScope, ScreeningIn
from app.settings import Environment, Settings
from tests.strategies import directories, moments, screenings

RULE_SET = load_rule_set()
SETTINGS = Settings(env=Environment.test)
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def routed(
    s: ScreeningIn, partners: list[Partner], now: datetime
) -> list[tuple[DecidedReferral, list[MatchResult]]]:
    """Every decided referral, matched, then matched again excluding each chosen partner
    in turn (every partner declines) until none is left: the whole fallback chain."""
    facts = facts_at(s, now)
    subject = SubjectFacts.from_screening(facts.screening, now.date())
    chains = []
    for decided in RULE_SET.decide(facts, trace=False).referrals:
        tried: set[str] = set()
        chain = []
        for _ in range(len(partners) + 1):
            result = match(decided, subject, partners, now, settings=SETTINGS, exclude=tried)
            chain.append(result)
            if result.partner_id is None:
                break
            tried.add(result.partner_id)
        chains.append((decided, chain))
    return chains


@PROPERTY
@given(screenings(), directories(), moments())
def test_no_law_enforcement_partner_without_the_scope(
    s: ScreeningIn, partners: list[Partner], now: datetime
) -> None:
    roles = {p.id: p.role for p in partners}
    consented = (
        s.consent.given
        and not s.consent.lacks_capacity
        and ConsentScope.law_enforcement in s.consent.scopes
    )
    for decided, chain in routed(s, partners, now):
        for result in chain:
            chosen = [result.partner_id, *result.fallback_ids] if result.partner_id else []
            for partner_id in chosen:
                assert decided.recipient.accepts(roles[partner_id])
                if roles[partner_id] is PartnerRole.law_enforcement:
                    assert decided.recipient is Recipient.law_enforcement
                    assert consented
                    assert s.legal.wants_police_report


@PROPERTY
@given(screenings(), directories(), moments())
def test_a_childs_protection_only_reaches_the_authority_or_a_shelter_beside_it(
    s: ScreeningIn, partners: list[Partner], now: datetime
) -> None:
    roles = {p.id: p.role for p in partners}
    for decided, chain in routed(s, partners, now):
        for result in chain:
            if result.partner_id is None:
                assert result.needs_human
                continue
            role = roles[result.partner_id]
            if decided.recipient is Recipient.child_protection_authority:
                assert role is PartnerRole.child_protection_authority
            if decided.recipient is Recipient.shelter:
                assert role is PartnerRole.shelter
            assert role is not PartnerRole.notification_recipient


def _eligible_open(result: MatchResult, partners: list[Partner], now: datetime) -> list[str]:
    """Partners matching left out only because they were closed, or that it chose open."""
    passed = {p.partner_id: p.reason for p in result.passed_over}
    candidates = [result.partner_id, *result.fallback_ids]
    candidates += [pid for pid, reason in passed.items() if reason is PassOverReason.closed_now]
    by_id = {p.id: p for p in partners}
    return [pid for pid in candidates if pid and by_id[pid].hours.open_at(now)]


@PROPERTY
@given(screenings(), directories(), moments())
def test_no_emergency_to_a_closed_partner_without_an_escalation(
    s: ScreeningIn, partners: list[Partner], now: datetime
) -> None:
    by_id = {p.id: p for p in partners}
    for decided, chain in routed(s, partners, now):
        for result in chain:
            if result.partner_id is None:
                continue
            chosen = by_id[result.partner_id]
            assert chosen.status is PartnerStatus.active
            if decided.urgency is not Urgency.emergency:
                assert result.escalation is None
                continue
            if not chosen.hours.open_at(now):
                assert result.escalation is Escalation.emergency_no_partner_open
                assert result.needs_human
                assert result.human_reason == "emergency_no_partner_open"
                assert _eligible_open(result, partners, now) == []
            else:
                assert result.escalation is None
                assert all(by_id[f].hours.open_at(now) for f in result.fallback_ids)
