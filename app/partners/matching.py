"""Eligibility matching: which partner receives a decided referral, and why.

A pure function of its inputs (no database, no clock): the caller passes the partners and
``now``, and stores the :class:`MatchResult` (it is the referral's routing explanation).

Order, as the protocol states it (docs/protocol.md, rule 13):

1. the service category, and the partner's **role**: the decided referral's recipient says
   which roles may take it (an ordinary provider, the child-protection authority, a
   shelter, law enforcement). Nothing here widens it: a fallback picks another partner of
   the same kind, never a police unit because no shelter had room;
2. the region: partners serving the person's region first; national partners only when no
   regional partner is eligible and has capacity;
3. age and sex eligibility; a presumed minor never goes to an adults-only partner;
4. capacity (available > 0);
5. for an **emergency**, opening hours in the partner's own time zone: only a partner open
   now (or always open) is chosen. When none is, the best closed one is chosen *and* the
   referral is escalated to a person at once (``escalation``);
6. language: a partner speaking the person's language first, otherwise the interpreter
   flag; then priority (lower first), then id for a stable order.

No eligible partner is a result, not an error: ``partner`` is ``None``, ``needs_human`` is
true and ``unmatched_reason`` says why. The caller holds the referral and flags it for a
person; it never drops it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from app.partners.directory import Eligibility, Partner, PartnerStatus
from app.schemas.decision import DecidedReferral, PartnerRole, Recipient, ReferralFlag, Urgency
from app.schemas.screening import (
    AGE_BAND_RANGES,
    INDIGENOUS_LANGUAGES,
    MINOR_AGE_BANDS,
    AgeBand,
    Language,
    Region,
    ScreeningIn,
    Sex,
    age_of,
)
from app.settings import Settings


@dataclass(frozen=True, slots=True)
class SubjectFacts:
    """The screening facts matching reads. No name, contact or notes: matching never needs them."""

    region: Region
    ubigeo: str | None = None
    age: int | None = None
    age_band: AgeBand | None = None
    #: Under 18, or age unknown/disputed with signs of minority: treated as a child.
    presumed_minor: bool = False
    sex: Sex = Sex.unknown
    preferred_language: Language = Language.es
    speaks_spanish: bool = True
    needs_interpreter: bool = False

    @classmethod
    def from_screening(cls, screening: ScreeningIn, on: date) -> SubjectFacts:
        s = screening.subject
        age = age_of(s, on)
        uncertain = age is None or s.age_disputed or s.age_estimated
        presumed_minor = (
            (age is not None and age < 18)
            or (s.age_band in MINOR_AGE_BANDS)
            or (uncertain and s.minority_signs)
            or s.unaccompanied_minor
            or s.separated_child
        )
        return cls(
            region=s.region,
            ubigeo=s.ubigeo,
            age=age,
            age_band=s.age_band,
            presumed_minor=presumed_minor,
            sex=s.sex,
            preferred_language=s.preferred_language,
            speaks_spanish=s.speaks_spanish,
            needs_interpreter=s.needs_interpreter,
        )

    @property
    def language_need(self) -> bool:
        """Whether a partner must speak the person's language, or an interpreter is needed."""
        return (
            self.needs_interpreter
            or not self.speaks_spanish
            or self.preferred_language in INDIGENOUS_LANGUAGES
        )


class PassOverReason(StrEnum):
    excluded = "excluded"  # already rejected or timed out for this referral
    paused = "paused"
    service_not_offered = "service_not_offered"
    #: The partner's role may not take this referral (e.g. law enforcement for a protection
    #: referral, a shelter for a child's referral to the child-protection authority).
    role_not_allowed = "role_not_allowed"
    out_of_area = "out_of_area"
    age_ineligible = "age_ineligible"
    sex_ineligible = "sex_ineligible"
    no_capacity = "no_capacity"
    #: An emergency, and this partner is closed while another eligible one is open.
    closed_now = "closed_now"
    regional_partner_preferred = "regional_partner_preferred"
    language_mismatch = "language_mismatch"
    lower_priority = "lower_priority"


class UnmatchedReason(StrEnum):
    no_partner_offers_service = "no_partner_offers_service"
    no_partner_with_role = "no_partner_with_role"
    no_eligible_partner = "no_eligible_partner"
    no_capacity = "no_capacity"
    all_candidates_excluded = "all_candidates_excluded"


class Escalation(StrEnum):
    """Why a matched referral also needs a person at once."""

    emergency_no_partner_open = "emergency_no_partner_open"


class PassedOver(BaseModel):
    model_config = ConfigDict(frozen=True)

    partner_id: str
    reason: PassOverReason


class MatchResult(BaseModel):
    """The routing outcome for one decided referral, stored as its explanation."""

    model_config = ConfigDict(frozen=True)

    service: str
    #: Which kind of partner could take it (the decided referral's recipient).
    recipient: Recipient = Recipient.provider
    partner_id: str | None
    #: The chosen partner's role.
    partner_role: PartnerRole | None = None
    #: Eligible partners with capacity, in the order to try them after the chosen one.
    fallback_ids: tuple[str, ...] = ()
    interpreter_needed: bool
    #: Why the chosen partner: the matching tier and the criteria it met.
    chosen_because: tuple[str, ...] = ()
    passed_over: tuple[PassedOver, ...] = ()
    unmatched_reason: UnmatchedReason | None = None
    #: A partner was chosen but a person must act at once too (an emergency sent to a
    #: partner that is closed because none was open).
    escalation: Escalation | None = None
    needs_human: bool = Field(
        description="No partner, or an emergency with no partner open: a person must act."
    )
    respond_by: datetime
    #: ``flags`` to send: the decided flags plus interpreter_needed when it applies.
    flags: frozenset[ReferralFlag]

    @property
    def matched(self) -> bool:
        return self.partner_id is not None

    @property
    def human_reason(self) -> str | None:
        if self.unmatched_reason is not None:
            return self.unmatched_reason.value
        return self.escalation.value if self.escalation is not None else None


class ProtocolViolation(RuntimeError):
    """Matching was about to send a referral to a partner the protocol forbids. Never
    expected: the role filter comes first; this is the last line of defence."""


def deadline_hours(settings: Settings, referral: DecidedReferral) -> float:
    """How long the partner has to acknowledge ``referral`` (docs/protocol.md, rule 13)."""
    if referral.urgency is Urgency.emergency and ReferralFlag.life_at_risk in referral.flags:
        return settings.deadline_life_at_risk_hours
    return {
        Urgency.emergency: settings.deadline_emergency_hours,
        Urgency.urgent: settings.deadline_urgent_hours,
        Urgency.routine: settings.deadline_routine_hours,
    }[referral.urgency]


def _range_ok(rules: Eligibility, low: int, high: int) -> bool:
    """Whether an age somewhere in ``low..high`` fits the partner's range."""
    return (rules.min_age is None or high >= rules.min_age) and (
        rules.max_age is None or low <= rules.max_age
    )


def _age_ok(partner: Partner, facts: SubjectFacts, treat_as_child: bool) -> bool:
    rules = partner.eligibility
    child = facts.presumed_minor or treat_as_child
    if child and not rules.accepts_minors:
        return False
    if facts.age is not None and (facts.age < 18 or not child):
        return _range_ok(rules, facts.age, facts.age)
    band = facts.age_band
    if band is not None and (band in MINOR_AGE_BANDS or not child):
        return _range_ok(rules, *AGE_BAND_RANGES[band])
    if child:
        return True  # a child of unknown age: any partner that takes minors
    # Age entirely unknown and no sign of minority: a children-only partner would be wrong
    # for an adult, so only partners that take adults.
    return rules.accepts_adults


def _sex_ok(partner: Partner, facts: SubjectFacts) -> bool:
    sexes = partner.eligibility.sexes
    if not sexes:
        return True
    # Unknown sex only goes to partners that accept everyone (or list "unknown").
    return facts.sex in sexes


def _speaks(partner: Partner, facts: SubjectFacts) -> bool:
    return facts.preferred_language in partner.languages


@dataclass(slots=True)
class _Candidates:
    """The partners that could take the referral, in the two geographic tiers, and why
    each of the others could not."""

    regional: list[Partner] = field(default_factory=list)
    national: list[Partner] = field(default_factory=list)
    passed: dict[str, PassOverReason] = field(default_factory=dict)

    def unmatched_reason(self) -> UnmatchedReason:
        reasons = set(self.passed.values())
        if reasons <= {PassOverReason.service_not_offered}:
            return UnmatchedReason.no_partner_offers_service
        if reasons <= {PassOverReason.service_not_offered, PassOverReason.role_not_allowed}:
            return UnmatchedReason.no_partner_with_role
        if PassOverReason.no_capacity in reasons:
            return UnmatchedReason.no_capacity
        if PassOverReason.excluded in reasons:
            return UnmatchedReason.all_candidates_excluded
        return UnmatchedReason.no_eligible_partner


def _why_not(
    referral: DecidedReferral,
    facts: SubjectFacts,
    partner: Partner,
    exclude: frozenset[str] | set[str],
) -> PassOverReason | None:
    """Why ``partner`` cannot take ``referral``, or None when it can (capacity aside)."""
    if referral.service not in partner.services:
        return PassOverReason.service_not_offered
    if not referral.recipient.accepts(partner.role):
        return PassOverReason.role_not_allowed
    if partner.id in exclude:
        return PassOverReason.excluded
    if partner.status is not PartnerStatus.active:
        return PassOverReason.paused
    if not _serves_regionally(partner, facts) and not partner.service_area.national:
        return PassOverReason.out_of_area
    if not _age_ok(partner, facts, ReferralFlag.treat_as_child in referral.flags):
        return PassOverReason.age_ineligible
    if not _sex_ok(partner, facts):
        return PassOverReason.sex_ineligible
    if partner.capacity.available <= 0:
        return PassOverReason.no_capacity
    return None


def _candidates(
    referral: DecidedReferral,
    facts: SubjectFacts,
    partners: Sequence[Partner],
    exclude: frozenset[str] | set[str],
) -> _Candidates:
    found = _Candidates()
    for partner in sorted(partners, key=lambda p: p.id):
        reason = _why_not(referral, facts, partner, exclude)
        if reason is not None:
            found.passed[partner.id] = reason
        elif _serves_regionally(partner, facts):
            found.regional.append(partner)
        else:
            found.national.append(partner)
    return found


def match(
    referral: DecidedReferral,
    facts: SubjectFacts,
    partners: Sequence[Partner],
    now: datetime,
    *,
    settings: Settings,
    exclude: frozenset[str] | set[str] = frozenset(),
) -> MatchResult:
    """Choose the partner for ``referral``; ``exclude`` lists partners already tried."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    found = _candidates(referral, facts, partners, exclude)

    def rank(p: Partner) -> tuple[int, int, str]:
        return (0 if _speaks(p, facts) else 1, p.priority, p.id)

    found.regional.sort(key=rank)
    found.national.sort(key=rank)
    ordered = found.regional + found.national
    escalation = None
    if referral.urgency is Urgency.emergency and ordered:
        open_now = [p for p in ordered if p.hours.open_at(now)]
        if open_now:
            for closed in (p for p in ordered if p not in open_now):
                found.passed[closed.id] = PassOverReason.closed_now
            ordered = open_now
        else:
            escalation = Escalation.emergency_no_partner_open
    result = MatchResult(
        service=referral.service.value,
        recipient=referral.recipient,
        partner_id=None,
        interpreter_needed=facts.language_need,
        needs_human=True,
        respond_by=now + timedelta(hours=deadline_hours(settings, referral)),
        flags=_flags(referral, facts.language_need),
    )
    if not ordered:
        return result.model_copy(
            update={
                "passed_over": _passed(found.passed),
                "unmatched_reason": found.unmatched_reason(),
            }
        )
    return _chosen(result, referral, facts, found, ordered, now, escalation)


def _chosen(
    result: MatchResult,
    referral: DecidedReferral,
    facts: SubjectFacts,
    found: _Candidates,
    ordered: list[Partner],
    now: datetime,
    escalation: Escalation | None,
) -> MatchResult:
    """The result for the first of ``ordered``, explaining why the others come later."""
    chosen = ordered[0]
    if not referral.recipient.accepts(chosen.role):
        raise ProtocolViolation("matching chose a partner whose role may not take the referral")
    chosen_speaks = _speaks(chosen, facts)
    interpreter = facts.language_need and not chosen_speaks
    regional = chosen in found.regional
    for other in ordered[1:]:
        if regional and other in found.national:
            found.passed[other.id] = PassOverReason.regional_partner_preferred
        elif chosen_speaks and not _speaks(other, facts):
            found.passed[other.id] = PassOverReason.language_mismatch
        else:
            found.passed[other.id] = PassOverReason.lower_priority
    because = [
        "offers_service",
        f"role_{chosen.role.value}",
        "serves_region" if regional else "national_fallback",
        "age_eligible",
        "sex_eligible",
        "speaks_language" if chosen_speaks else "interpreter_needed",
        "has_capacity",
        f"priority_{chosen.priority}",
        "open_now" if chosen.hours.open_at(now) else "closed_now",
    ]
    return result.model_copy(
        update={
            "partner_id": chosen.id,
            "partner_role": chosen.role,
            "fallback_ids": tuple(p.id for p in ordered[1:]),
            "interpreter_needed": interpreter,
            "chosen_because": tuple(because),
            "passed_over": _passed(found.passed),
            "escalation": escalation,
            "needs_human": escalation is not None,
            "flags": _flags(referral, interpreter),
        }
    )


def _serves_regionally(partner: Partner, facts: SubjectFacts) -> bool:
    """Served by the partner's regions or ubigeo prefixes (not merely by being national)."""
    return partner.service_area.serves_regionally(facts.region, facts.ubigeo)


def _passed(passed: dict[str, PassOverReason]) -> tuple[PassedOver, ...]:
    return tuple(PassedOver(partner_id=k, reason=v) for k, v in sorted(passed.items()))


def _flags(referral: DecidedReferral, interpreter: bool) -> frozenset[ReferralFlag]:
    flags = set(referral.flags)
    if interpreter:
        flags.add(ReferralFlag.interpreter_needed)
    return frozenset(flags)
