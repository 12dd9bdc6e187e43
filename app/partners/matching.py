"""Eligibility matching: which partner receives a decided referral, and why.

A pure function of its inputs (no database, no clock): the caller passes the partners and
``now``, and stores the :class:`MatchResult` (it is the referral's routing explanation).

Order, as the protocol states it (domain.md, rule 13):

1. the service category;
2. the region: partners serving the person's region first; national partners only when no
   regional partner is eligible and has capacity;
3. age and sex eligibility; a presumed minor never goes to an adults-only partner;
4. language: a partner speaking the person's language first, otherwise the interpreter flag;
5. capacity (available > 0), then priority (lower first), then id for a stable order.

No eligible partner is a result, not an error: ``partner`` is ``None``, ``needs_human`` is
true and ``unmatched_reason`` says why. The caller holds the referral and flags it for a
person; it never drops it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from app.partners.directory import Partner, PartnerStatus
from app.schemas.decision import DecidedReferral, ReferralFlag, Urgency
from app.schemas.screening import (
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

_BAND_RANGES: dict[AgeBand, tuple[int, int]] = {
    AgeBand.b0_11: (0, 11),
    AgeBand.b12_14: (12, 14),
    AgeBand.b15_17: (15, 17),
    AgeBand.b18_24: (18, 24),
    AgeBand.b25_34: (25, 34),
    AgeBand.b35_49: (35, 49),
    AgeBand.b50_plus: (50, 120),
}


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
    out_of_area = "out_of_area"
    age_ineligible = "age_ineligible"
    sex_ineligible = "sex_ineligible"
    no_capacity = "no_capacity"
    regional_partner_preferred = "regional_partner_preferred"
    language_mismatch = "language_mismatch"
    lower_priority = "lower_priority"


class UnmatchedReason(StrEnum):
    no_partner_offers_service = "no_partner_offers_service"
    no_eligible_partner = "no_eligible_partner"
    no_capacity = "no_capacity"
    all_candidates_excluded = "all_candidates_excluded"


class PassedOver(BaseModel):
    model_config = ConfigDict(frozen=True)

    partner_id: str
    reason: PassOverReason


class MatchResult(BaseModel):
    """The routing outcome for one decided referral, stored as its explanation."""

    model_config = ConfigDict(frozen=True)

    service: str
    partner_id: str | None
    #: Eligible partners with capacity, in the order to try them after the chosen one.
    fallback_ids: tuple[str, ...] = ()
    interpreter_needed: bool
    #: Why the chosen partner: the matching tier and the criteria it met.
    chosen_because: tuple[str, ...] = ()
    passed_over: tuple[PassedOver, ...] = ()
    unmatched_reason: UnmatchedReason | None = None
    needs_human: bool = Field(description="No partner: hold the referral for a person.")
    respond_by: datetime
    #: ``flags`` to send: the decided flags plus interpreter_needed when it applies.
    flags: frozenset[ReferralFlag]

    @property
    def matched(self) -> bool:
        return self.partner_id is not None


def deadline_hours(settings: Settings, urgency: Urgency) -> float:
    return {
        Urgency.emergency: settings.deadline_emergency_hours,
        Urgency.urgent: settings.deadline_urgent_hours,
        Urgency.routine: settings.deadline_routine_hours,
    }[urgency]


def _age_ok(partner: Partner, facts: SubjectFacts, treat_as_child: bool) -> bool:
    rules = partner.eligibility
    if facts.presumed_minor or treat_as_child:
        if not rules.accepts_minors:
            return False
        if facts.age is not None and facts.age < 18:
            return (rules.min_age is None or facts.age >= rules.min_age) and (
                rules.max_age is None or facts.age <= rules.max_age
            )
        if facts.age_band in MINOR_AGE_BANDS and facts.age_band is not None:
            low, high = _BAND_RANGES[facts.age_band]
            return (rules.min_age is None or high >= rules.min_age) and (
                rules.max_age is None or low <= rules.max_age
            )
        return True  # a child of unknown age: any partner that takes minors
    if facts.age is not None:
        return (rules.min_age is None or facts.age >= rules.min_age) and (
            rules.max_age is None or facts.age <= rules.max_age
        )
    if facts.age_band is not None:
        low, high = _BAND_RANGES[facts.age_band]
        return (rules.min_age is None or high >= rules.min_age) and (
            rules.max_age is None or low <= rules.max_age
        )
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


def match(
    referral: DecidedReferral,
    facts: SubjectFacts,
    partners: list[Partner] | tuple[Partner, ...],
    now: datetime,
    *,
    settings: Settings,
    exclude: frozenset[str] | set[str] = frozenset(),
) -> MatchResult:
    """Choose the partner for ``referral``; ``exclude`` lists partners already tried."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    treat_as_child = ReferralFlag.treat_as_child in referral.flags
    passed: dict[str, PassOverReason] = {}
    regional: list[Partner] = []
    national: list[Partner] = []
    offers_service = False
    eligible_without_capacity = False
    excluded_eligible = False

    for partner in sorted(partners, key=lambda p: p.id):
        if referral.service not in partner.services:
            passed[partner.id] = PassOverReason.service_not_offered
            continue
        offers_service = True
        if partner.id in exclude:
            passed[partner.id] = PassOverReason.excluded
            excluded_eligible = True
            continue
        if partner.status is not PartnerStatus.active:
            passed[partner.id] = PassOverReason.paused
            continue
        in_region = _serves_regionally(partner, facts)
        if not in_region and not partner.service_area.national:
            passed[partner.id] = PassOverReason.out_of_area
            continue
        if not _age_ok(partner, facts, treat_as_child):
            passed[partner.id] = PassOverReason.age_ineligible
            continue
        if not _sex_ok(partner, facts):
            passed[partner.id] = PassOverReason.sex_ineligible
            continue
        if partner.capacity.available <= 0:
            passed[partner.id] = PassOverReason.no_capacity
            eligible_without_capacity = True
            continue
        (regional if in_region else national).append(partner)

    def rank(p: Partner) -> tuple[int, int, str]:
        return (0 if _speaks(p, facts) else 1, p.priority, p.id)

    regional.sort(key=rank)
    national.sort(key=rank)
    ordered = regional + national
    deadline = now + timedelta(hours=deadline_hours(settings, referral.urgency))

    if not ordered:
        if not offers_service:
            reason = UnmatchedReason.no_partner_offers_service
        elif eligible_without_capacity:
            reason = UnmatchedReason.no_capacity
        elif excluded_eligible:
            reason = UnmatchedReason.all_candidates_excluded
        else:
            reason = UnmatchedReason.no_eligible_partner
        return MatchResult(
            service=referral.service.value,
            partner_id=None,
            interpreter_needed=facts.language_need,
            passed_over=_passed(passed),
            unmatched_reason=reason,
            needs_human=True,
            respond_by=deadline,
            flags=_flags(referral, facts.language_need),
        )

    chosen = ordered[0]
    chosen_speaks = _speaks(chosen, facts)
    interpreter = facts.language_need and not chosen_speaks
    for other in ordered[1:]:
        if chosen in regional and other in national:
            passed[other.id] = PassOverReason.regional_partner_preferred
        elif chosen_speaks and not _speaks(other, facts):
            passed[other.id] = PassOverReason.language_mismatch
        else:
            passed[other.id] = PassOverReason.lower_priority
    because = [
        "offers_service",
        "serves_region" if chosen in regional else "national_fallback",
        "age_eligible",
        "sex_eligible",
        "speaks_language" if chosen_speaks else "interpreter_needed",
        "has_capacity",
        f"priority_{chosen.priority}",
        "open_now" if chosen.hours.open_at(now) else "closed_now",
    ]
    return MatchResult(
        service=referral.service.value,
        partner_id=chosen.id,
        fallback_ids=tuple(p.id for p in ordered[1:]),
        interpreter_needed=interpreter,
        chosen_because=tuple(because),
        passed_over=_passed(passed),
        needs_human=False,
        respond_by=deadline,
        flags=_flags(referral, interpreter),
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
