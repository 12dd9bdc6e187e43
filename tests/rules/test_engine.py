"""Evaluation: hit policy, aggregation, trace, purity and the generated code's safety."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from app.rules import load_rule_set
from app.rules.scenarios import deep_merge
from app.schemas.decision import LegalBasis, Recipient, ReferralFlag, Urgency
from app.schemas.screening import ScreeningIn, ServiceCategory
from tests.factories import adult_consenting, screening
from tests.rules.helpers import build, one_rule, rule_file

RULE_SET = load_rule_set()
MALE = '{field: subject.sex, op: "==", value: male}'
AGE_27 = '{field: subject.age, op: "==", value: 27, if_missing: false}'


def model(**overrides: Any) -> ScreeningIn:
    return ScreeningIn.model_validate(adult_consenting(**overrides))


def test_highest_urgency_wins_and_every_reason_is_kept() -> None:
    decision = RULE_SET.evaluate(
        model(
            health__injury_severity="serious",
            health__sti_symptoms=True,
            health__hours_since_sexual_violence=None,
            health__mining_exposure=False,
            indicators__sectors=[],
            needs_expressed=[],
        )
    )
    medical = next(r for r in decision.referrals if r.service is ServiceCategory.medical)
    assert medical.urgency is Urgency.urgent
    assert {r.rule_id for r in medical.reasons} == {"injury-serious", "sti-symptoms"}
    assert all(r.text["es"] and r.text["en"] for r in medical.reasons)


def test_strongest_legal_basis_applies() -> None:
    decision = RULE_SET.evaluate(
        ScreeningIn.model_validate(
            screening(subject__age=15, safety__immediate_danger=True, needs_expressed=[])
        )
    )
    protection = next(r for r in decision.referrals if r.service is ServiceCategory.protection)
    assert protection.legal_basis is LegalBasis.child_protection_duty
    assert protection.urgency is Urgency.emergency
    bases = {r.legal_basis for r in protection.reasons}
    assert bases == {LegalBasis.child_protection_duty, LegalBasis.vital_interest}


def test_at_most_one_referral_per_service_and_recipient() -> None:
    decision = RULE_SET.evaluate(ScreeningIn.model_validate(screening()))
    keys = [(r.service, r.recipient) for r in decision.referrals]
    assert len(keys) == len(set(keys))
    # The README's girl: the child-protection authority and a shelter beside it.
    protection = [
        r.recipient for r in decision.referrals if r.service is ServiceCategory.protection
    ]
    assert protection == [Recipient.child_protection_authority, Recipient.shelter]


def test_trace_records_version_hash_rules_and_inputs() -> None:
    decision = RULE_SET.evaluate(ScreeningIn.model_validate(screening()), trace=True)
    trace = decision.trace
    assert trace is not None
    assert trace.rule_set_version == RULE_SET.version
    assert trace.rule_set_hash == RULE_SET.sha256
    fired = {f.rule_id: f for f in trace.fired}
    minor = fired["minor-protection"]
    assert minor.inputs["subject.age"] == 16
    assert minor.guideline.startswith("UNICEF")
    assert set(minor.text) >= {"es", "en"}
    assert fired["interpreter-needed"].inputs["subject.preferred_language"] == "qu"
    assert fired["mining-logging-screening"].inputs["indicators.sectors"] == [
        "bar_nightclub",
        "mining",
    ]


def test_trace_never_holds_personal_fields() -> None:
    body = screening(
        subject__name="CANARY-NAME",
        subject__contact={"phone": "+51 999 999 999"},
        subject__date_of_birth="2010-01-01",
        notes="CANARY-NOTES",
    )
    decision = RULE_SET.evaluate(ScreeningIn.model_validate(body), trace=True)
    dumped = decision.model_dump_json()
    assert "CANARY" not in dumped
    assert "999 999" not in dumped
    assert "2010-01-01" not in dumped


def test_trace_off_skips_the_trace_but_decides_the_same() -> None:
    s = ScreeningIn.model_validate(screening())
    on = RULE_SET.evaluate(s, trace=True)
    off = RULE_SET.evaluate(s, trace=False)
    assert off.trace is None
    assert off.referrals == on.referrals
    assert off.non_identifying_notification == on.non_identifying_notification


def test_evaluation_is_pure_and_repeatable() -> None:
    s = ScreeningIn.model_validate(screening())
    before = copy.deepcopy(s.model_dump())
    first = RULE_SET.evaluate(s)
    second = RULE_SET.evaluate(s)
    assert first == second
    assert s.model_dump() == before


def test_decision_serialises_to_json() -> None:
    decision = RULE_SET.evaluate(ScreeningIn.model_validate(screening()))
    data = decision.model_dump(mode="json")
    assert data["trace"]["rule_set_hash"] == RULE_SET.sha256
    assert isinstance(data["referrals"][0]["flags"], list)


def test_flag_rules_apply_to_every_referral() -> None:
    decision = RULE_SET.evaluate(ScreeningIn.model_validate(screening()))
    for referral in decision.referrals:
        assert ReferralFlag.interpreter_needed in referral.flags
        assert ReferralFlag.treat_as_child in referral.flags


def test_text_values_are_embedded_safely() -> None:
    """A value full of quotes is a constant in the generated code, never code."""
    tricky = "A'); import os; os.system('x') #"
    text = one_rule(f'{{field: source.site, op: "==", value: {tricky!r}, if_missing: false}}')
    rule_set = build(text)
    assert "import os" not in rule_set.python_source.replace(repr(tricky), "")
    base = deep_merge(adult_consenting(), {"source": {"site": tricky}})
    assert rule_set.fired_ids(ScreeningIn.model_validate(base)) == ["r1"]


def test_generated_code_has_no_builtins_beyond_bool_and_sorted() -> None:
    rule_set = build(one_rule('{field: health.sti_symptoms, op: "==", value: true}'))
    assert rule_set.match.__globals__["__builtins__"] == {"bool": bool, "sorted": sorted}


@pytest.mark.parametrize(
    ("when", "value", "fires"),
    [
        ('{field: subject.age, op: "<", value: 18, if_missing: true}', None, True),
        ('{field: subject.age, op: "<", value: 18, if_missing: false}', None, False),
        ('{field: subject.age, op: "<", value: 18, if_missing: false}', 17, True),
        ('{field: subject.age, op: ">=", value: 18, if_missing: false}', 18, True),
        ('{field: subject.age, op: "!=", value: 18, if_missing: false}', 18, False),
        ("{field: subject.age, op: is_missing}", None, True),
        ("{field: subject.age, op: is_known}", None, False),
        ("{field: subject.age, op: is_known}", 40, True),
        ('{not: {field: subject.age, op: "<", value: 18, if_missing: false}}', None, True),
    ],
)
def test_missing_values_follow_if_missing(when: str, value: int | None, fires: bool) -> None:
    rule_set = build(one_rule(when))
    s = ScreeningIn.model_validate(adult_consenting(subject__age=value))
    assert (rule_set.fired_ids(s) == ["r1"]) is fires


@pytest.mark.parametrize(
    ("when", "fires"),
    [
        ("{field: indicators.sectors, op: contains, value: mining}", True),
        ("{field: indicators.sectors, op: not_contains, value: mining}", False),
        ("{field: indicators.sectors, op: contains_any, value: [logging, mining]}", True),
        ("{field: indicators.sectors, op: contains_none, value: [logging, fishing]}", True),
        ("{field: subject.sex, op: in, value: [female, intersex]}", True),
        ("{field: subject.sex, op: not_in, value: [female, intersex]}", False),
        (
            "{any: [" + MALE + ", " + AGE_27 + "]}",
            True,
        ),
        (
            "{all: [" + MALE + ", " + AGE_27 + "]}",
            False,
        ),
    ],
)
def test_operators(when: str, fires: bool) -> None:
    rule_set = build(one_rule(when))
    s = ScreeningIn.model_validate(adult_consenting())  # female, 27, sectors mining + bar
    assert (rule_set.fired_ids(s) == ["r1"]) is fires


def test_hash_changes_with_the_file() -> None:
    a = build(one_rule('{field: health.sti_symptoms, op: "==", value: true}'))
    b = build(
        rule_file(
            one_rule('{field: health.sti_symptoms, op: "==", value: true}').split("rules:\n", 1)[1],
            version='"t2"',
        )
    )
    assert a.sha256 != b.sha256
    assert b.version == "t2"
