from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from app.partners.matching import (
    MatchResult,
    PassOverReason,
    SubjectFacts,
    UnmatchedReason,
    match,
)
from app.schemas.decision import PartnerRole, ReferralFlag, Urgency
from app.schemas.screening import AgeBand, Language, Region, ScreeningIn, ServiceCategory, Sex
from app.settings import Environment, Settings
from tests.factories import screening
from tests.partners.helpers import decided, partner

NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
SETTINGS = Settings(env=Environment.test)
ADULT = SubjectFacts(region=Region.madre_de_dios, age=30, sex=Sex.female)


def reasons(result: MatchResult) -> dict[str, PassOverReason]:
    return {p.partner_id: p.reason for p in result.passed_over}


def test_regional_partner_first_then_national_as_fallback() -> None:
    partners = [
        partner("national", service_area={"national": True}, priority=1),
        partner("regional", priority=50),
        partner("elsewhere", service_area={"regions": ["cusco"]}),
    ]
    result = match(decided(), ADULT, partners, NOW, settings=SETTINGS)
    assert result.partner_id == "regional"
    assert result.fallback_ids == ("national",)
    assert reasons(result) == {
        "national": PassOverReason.regional_partner_preferred,
        "elsewhere": PassOverReason.out_of_area,
    }
    assert "serves_region" in result.chosen_because


def test_falls_back_to_national_when_no_partner_serves_the_region() -> None:
    partners = [
        partner("cusco-only", service_area={"regions": ["cusco"]}),
        partner("national", service_area={"national": True}),
    ]
    facts = SubjectFacts(region=Region.puno, age=30)
    result = match(decided(), facts, partners, NOW, settings=SETTINGS)
    assert result.partner_id == "national"
    assert "national_fallback" in result.chosen_because


def test_ubigeo_prefix_serves_only_a_known_district() -> None:
    p = partner("tambopata", service_area={"ubigeo_prefixes": ["1701"]})
    inside = SubjectFacts(region=Region.madre_de_dios, ubigeo="170101", age=30)
    unknown = SubjectFacts(region=Region.madre_de_dios, age=30)
    assert match(decided(), inside, [p], NOW, settings=SETTINGS).partner_id == "tambopata"
    assert match(decided(), unknown, [p], NOW, settings=SETTINGS).partner_id is None
    dept = partner("dept", service_area={"ubigeo_prefixes": ["17"]})
    assert match(decided(), unknown, [dept], NOW, settings=SETTINGS).partner_id == "dept"


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (SubjectFacts(region=Region.madre_de_dios, age=16, presumed_minor=True), "children"),
        (SubjectFacts(region=Region.madre_de_dios, age=30), "adults"),
        # Age unknown but signs of minority: treated as a child, never to adults-only.
        (SubjectFacts(region=Region.madre_de_dios, presumed_minor=True), "children"),
        (SubjectFacts(region=Region.madre_de_dios, age_band=AgeBand.b12_14), "children"),
    ],
)
def test_age_eligibility(facts: SubjectFacts, expected: str) -> None:
    partners = [
        partner("adults", eligibility={"min_age": 18}, priority=1),
        partner("children", eligibility={"max_age": 17}, priority=2),
    ]
    result = match(decided(), facts, partners, NOW, settings=SETTINGS)
    assert result.partner_id == expected
    other = "adults" if expected == "children" else "children"
    assert reasons(result)[other] is PassOverReason.age_ineligible


def test_presumed_minor_never_to_adults_only_even_without_alternative() -> None:
    # A stated age of 19 that is disputed, with signs of minority, plus the rules' flag.
    facts = SubjectFacts(region=Region.madre_de_dios, age=19, presumed_minor=True)
    result = match(
        decided(flags=frozenset({ReferralFlag.treat_as_child})),
        facts,
        [partner("adults", eligibility={"min_age": 18})],
        NOW,
        settings=SETTINGS,
    )
    assert result.partner_id is None
    assert result.needs_human
    assert reasons(result) == {"adults": PassOverReason.age_ineligible}


def test_treat_as_child_flag_alone_excludes_adults_only() -> None:
    facts = SubjectFacts(region=Region.madre_de_dios)
    result = match(
        decided(flags=frozenset({ReferralFlag.treat_as_child})),
        facts,
        [partner("adults", eligibility={"min_age": 18}), partner("any", priority=200)],
        NOW,
        settings=SETTINGS,
    )
    assert result.partner_id == "any"


def test_presumed_minor_from_screening() -> None:
    s = ScreeningIn.model_validate(
        screening(
            subject__age=...,
            subject__unaccompanied_minor=False,
            subject__age_estimated=True,
            subject__minority_signs=True,
        )
    )
    assert SubjectFacts.from_screening(s, date(2026, 11, 23)).presumed_minor


def test_sex_eligibility_and_unknown_sex() -> None:
    women_only = partner("women", eligibility={"sexes": ["female"]}, priority=1)
    anyone = partner("anyone", priority=2)
    man = SubjectFacts(region=Region.madre_de_dios, age=30, sex=Sex.male)
    unknown = SubjectFacts(region=Region.madre_de_dios, age=30, sex=Sex.unknown)
    woman = SubjectFacts(region=Region.madre_de_dios, age=30, sex=Sex.female)
    assert match(decided(), woman, [women_only, anyone], NOW, settings=SETTINGS).partner_id == (
        "women"
    )
    for facts in (man, unknown):
        result = match(decided(), facts, [women_only, anyone], NOW, settings=SETTINGS)
        assert result.partner_id == "anyone"
        assert reasons(result)["women"] is PassOverReason.sex_ineligible


def test_language_match_is_preferred_over_priority() -> None:
    quechua = SubjectFacts(
        region=Region.cusco, age=30, preferred_language=Language.qu, speaks_spanish=False
    )
    partners = [
        partner("spanish", service_area={"regions": ["cusco"]}, priority=1),
        partner("quechua", service_area={"regions": ["cusco"]}, languages=["qu", "es"], priority=9),
    ]
    result = match(decided(), quechua, partners, NOW, settings=SETTINGS)
    assert result.partner_id == "quechua"
    assert not result.interpreter_needed
    assert ReferralFlag.interpreter_needed not in result.flags
    assert reasons(result)["spanish"] is PassOverReason.language_mismatch


def test_interpreter_flag_when_no_partner_speaks_the_language() -> None:
    aymara = SubjectFacts(region=Region.puno, age=30, preferred_language=Language.ay)
    result = match(
        decided(),
        aymara,
        [partner("p", service_area={"regions": ["puno"]})],
        NOW,
        settings=SETTINGS,
    )
    assert result.partner_id == "p"
    assert result.interpreter_needed
    assert ReferralFlag.interpreter_needed in result.flags
    assert "interpreter_needed" in result.chosen_because


def test_spanish_speaker_preferring_english_needs_no_interpreter() -> None:
    facts = SubjectFacts(region=Region.madre_de_dios, age=30, preferred_language=Language.en)
    result = match(decided(), facts, [partner("p")], NOW, settings=SETTINGS)
    assert result.partner_id == "p"
    assert not result.interpreter_needed


def test_exhausted_capacity_moves_to_the_next_partner() -> None:
    partners = [
        partner("full", capacity={"available": 0, "maximum": 10}, priority=1),
        partner("free", priority=50),
    ]
    result = match(decided(), ADULT, partners, NOW, settings=SETTINGS)
    assert result.partner_id == "free"
    assert reasons(result)["full"] is PassOverReason.no_capacity


def test_all_regional_full_falls_back_to_national() -> None:
    partners = [
        partner("full", capacity={"available": 0, "maximum": 10}),
        partner("national", service_area={"national": True}),
    ]
    assert match(decided(), ADULT, partners, NOW, settings=SETTINGS).partner_id == "national"


def test_no_capacity_anywhere_holds_for_a_person() -> None:
    result = match(
        decided(),
        ADULT,
        [partner("full", capacity={"available": 0, "maximum": 10})],
        NOW,
        settings=SETTINGS,
    )
    assert result.partner_id is None
    assert result.needs_human
    assert result.unmatched_reason is UnmatchedReason.no_capacity


def test_paused_partner_is_passed_over() -> None:
    partners = [partner("paused", status="paused", priority=1), partner("active", priority=9)]
    result = match(decided(), ADULT, partners, NOW, settings=SETTINGS)
    assert result.partner_id == "active"
    assert reasons(result)["paused"] is PassOverReason.paused


def test_exclude_skips_partners_already_tried() -> None:
    partners = [partner("a", priority=1), partner("b", priority=2)]
    result = match(decided(), ADULT, partners, NOW, settings=SETTINGS, exclude={"a"})
    assert result.partner_id == "b"
    assert reasons(result)["a"] is PassOverReason.excluded
    none_left = match(decided(), ADULT, partners, NOW, settings=SETTINGS, exclude={"a", "b"})
    assert none_left.unmatched_reason is UnmatchedReason.all_candidates_excluded
    assert none_left.needs_human


def test_no_eligible_partner_at_all() -> None:
    result = match(
        decided(ServiceCategory.legal), ADULT, [partner("medical-only")], NOW, settings=SETTINGS
    )
    assert result.partner_id is None
    assert result.needs_human
    assert result.fallback_ids == ()
    assert result.unmatched_reason is UnmatchedReason.no_partner_offers_service
    assert reasons(result) == {"medical-only": PassOverReason.service_not_offered}
    out_of_area = match(
        decided(),
        SubjectFacts(region=Region.tacna, age=30),
        [partner("mdd")],
        NOW,
        settings=SETTINGS,
    )
    assert out_of_area.unmatched_reason is UnmatchedReason.no_eligible_partner


@pytest.mark.parametrize(
    ("urgency", "hours"), [(Urgency.emergency, 24), (Urgency.urgent, 72), (Urgency.routine, 336)]
)
def test_response_deadline_follows_urgency(urgency: Urgency, hours: int) -> None:
    result = match(decided(urgency=urgency), ADULT, [partner("p")], NOW, settings=SETTINGS)
    assert result.respond_by == NOW + timedelta(hours=hours)
    custom = Settings(env=Environment.test, deadline_emergency_hours=6)
    quick = match(decided(urgency=Urgency.emergency), ADULT, [], NOW, settings=custom)
    assert quick.respond_by == NOW + timedelta(hours=6)


def test_order_is_stable_and_priority_breaks_ties() -> None:
    partners = [partner("c", priority=5), partner("a", priority=5), partner("b", priority=1)]
    result = match(decided(), ADULT, partners, NOW, settings=SETTINGS)
    assert (result.partner_id, result.fallback_ids) == ("b", ("a", "c"))
    assert reasons(result)["a"] is PassOverReason.lower_priority


def _readme_routing(moment: datetime) -> dict[tuple[str, str], MatchResult]:
    """The README's girl, decided by the default protocol and routed through the demo
    directory at ``moment``."""
    from app.partners.directory import DEMO_DIRECTORY, directory_env, load_directory
    from app.rules import load_rule_set

    directory = load_directory(
        DEMO_DIRECTORY, relaxed=True, env=directory_env("http://127.0.0.1:8000")
    )
    s = ScreeningIn.model_validate(screening())  # a 16-year-old girl in Madre de Dios
    facts = SubjectFacts.from_screening(s, moment.date())
    return {
        (d.service.value, d.recipient.value): match(
            d, facts, directory.partners, moment, settings=SETTINGS
        )
        for d in load_rule_set().evaluate(s).referrals
    }


def test_demo_directory_routes_the_readme_example() -> None:
    """A child's protection goes to the child-protection authority (DEMUNA, open on a
    Monday morning), a shelter gets the additional one, the police unit never anything."""
    routed = _readme_routing(NOW)  # Monday 10:00 in Lima
    authority = routed["protection", "child_protection_authority"]
    assert authority.partner_id == "demuna-tambopata"
    assert authority.partner_role is PartnerRole.child_protection_authority
    assert authority.fallback_ids == ("upe-mimp-nacional",)
    assert reasons(authority)["hogar-refugio-mdd"] is PassOverReason.role_not_allowed
    assert reasons(authority)["policia-trata-nacional"] is PassOverReason.role_not_allowed
    shelter = routed["protection", "shelter"]
    assert shelter.partner_id == "hogar-refugio-mdd"
    assert reasons(shelter)["policia-trata-nacional"] is PassOverReason.role_not_allowed
    assert routed["medical", "provider"].partner_id == "hospital-santa-rosa-mdd"


def test_an_emergency_at_1955_skips_an_office_that_closed_at_1700() -> None:
    """19:55 in Lima: DEMUNA Tambopata (08:00-17:00) is closed, so the child's emergency
    goes to the UPE, which is always open, and nobody needs to be alerted."""
    evening = datetime(2026, 11, 23, 19, 55, tzinfo=ZoneInfo("America/Lima"))
    authority = _readme_routing(evening)["protection", "child_protection_authority"]
    assert authority.partner_id == "upe-mimp-nacional"
    assert reasons(authority)["demuna-tambopata"] is PassOverReason.closed_now
    assert authority.escalation is None
    assert authority.needs_human is False
    assert "open_now" in authority.chosen_because
