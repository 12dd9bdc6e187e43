"""Every load-time error is a clear ``RuleFileError`` naming the file, rule id and path."""

from __future__ import annotations

import pytest

from app.rules import RuleFileError, load_rule_set
from tests.rules.helpers import build, one_rule, rule_file


def problems(text: str) -> list[str]:
    with pytest.raises(RuleFileError) as info:
        build(text)
    assert info.value.problems, "a RuleFileError always lists its problems"
    return [str(p) for p in info.value.problems]


def test_valid_minimal_file_loads() -> None:
    rule_set = build(one_rule('{field: health.sti_symptoms, op: "==", value: true}'))
    assert rule_set.version == "t1"
    assert len(rule_set.sha256) == 64


def test_unknown_field_names_file_rule_path_and_suggests() -> None:
    [message] = problems(one_rule('{field: subject.agee, op: "<", value: 18, if_missing: false}'))
    assert message.startswith("test.yaml")
    assert "rule 'r1'" in message
    assert "when.field" in message
    assert "did you mean 'subject.age'" in message


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ('{field: subject.sex, op: "<", value: female}', "operator '<' is not allowed"),
        ('{field: subject.speaks_spanish, op: ">", value: true}', "operator '>' is not allowed"),
        ("{field: subject.age, op: in, value: [1, 2], if_missing: false}", "operator 'in'"),
        ('{field: indicators.sectors, op: "==", value: mining}', "operator '=='"),
        ('{field: subject.sex, op: "=~", value: female}', "unknown operator"),
        ("{field: subject.sex, op: is_missing}", "operator 'is_missing' is not allowed"),
    ],
)
def test_operator_not_allowed_for_type(when: str, expected: str) -> None:
    [message] = problems(one_rule(when))
    assert expected in message
    assert "rule 'r1'" in message
    assert "when.op" in message


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ('{field: subject.sex, op: "==", value: femal}', "not one of"),
        ('{field: subject.age, op: "<", value: "18", if_missing: false}', "got str"),
        ('{field: subject.age, op: "<", value: 17.5, if_missing: false}', "got float"),
        ('{field: subject.age, op: "<", value: 200, if_missing: false}', "outside"),
        ('{field: subject.speaks_spanish, op: "==", value: "true"}', "got str"),
        ('{field: subject.age, op: "==", value: true, if_missing: false}', "got bool"),
        ('{field: subject.nationality, op: "==", value: "Peru", if_missing: false}', "format"),
        ("{field: subject.sex, op: in, value: []}", "non-empty list"),
        ('{field: subject.sex, op: "==", value: [female]}', "not a list"),
        ("{field: indicators.sectors, op: contains, value: gold}", "not one of"),
    ],
)
def test_value_of_wrong_type_or_outside_enum(when: str, expected: str) -> None:
    [message] = problems(one_rule(when))
    assert expected in message
    assert "when.value" in message


def test_did_you_mean_for_enum_values() -> None:
    [message] = problems(one_rule('{field: subject.sex, op: "==", value: femal}'))
    assert "did you mean 'female'" in message


def test_nullable_field_needs_if_missing() -> None:
    [message] = problems(one_rule('{field: subject.age, op: "<", value: 18}'))
    assert "if_missing" in message
    assert "may be unknown" in message


def test_if_missing_on_a_field_that_is_never_missing() -> None:
    [message] = problems(
        one_rule('{field: subject.speaks_spanish, op: "==", value: true, if_missing: true}')
    )
    assert "never unknown" in message


@pytest.mark.parametrize(
    "path",
    ["subject.name", "subject.contact", "subject.date_of_birth", "safety.safe_contact", "notes"],
)
def test_personal_fields_cannot_be_read(path: str) -> None:
    [message] = problems(one_rule(f"{{field: {path}, op: is_known}}"))
    assert "personal" in message


@pytest.mark.parametrize("path", ["id", "subject.case_code", "source.screener"])
def test_identifiers_cannot_be_read(path: str) -> None:
    [message] = problems(one_rule(f'{{field: {path}, op: "==", value: "x"}}'))
    assert "identifier" in message or "not a screening fact" in message


@pytest.mark.parametrize(
    "scalar",
    [
        "no",
        "No",
        "NO",
        "yes",
        "on",
        "off",
        "y",
        "n",
        "Y",
        "N",
        "True_",
        "1_000",
        "010",
        "1:30",
        "0x12",
    ],
)
def test_yaml_11_traps_are_rejected_with_the_line(scalar: str) -> None:
    text = one_rule(f'{{field: subject.nationality, op: "==", value: {scalar}, if_missing: false}}')
    messages = problems(text)
    if scalar == "True_":  # a plain string: caught by the field's format instead
        assert "format" in messages[0]
        return
    [message] = messages
    assert message.startswith("test.yaml:")  # file:line
    assert "quote it" in message


def test_quoted_trap_words_are_text() -> None:
    text = one_rule('{field: subject.nationality, op: "==", value: "NO", if_missing: false}')
    assert build(text).version == "t1"


def test_duplicate_rule_id() -> None:
    rule = """
    - id: same
      description: d
      guideline: g
      service: medical
      urgency: routine
      legal_basis: consent
      reason: {es: r, en: r}
      when: {field: health.sti_symptoms, op: "==", value: true}
    """
    [message] = problems(rule_file(rule + rule))
    assert "duplicate rule id 'same'" in message
    assert "rules[1].id" in message


def test_duplicate_yaml_key() -> None:
    text = one_rule('{field: health.sti_symptoms, op: "==", value: true}').replace(
        "    description: d\n", "    description: d\n    description: e\n"
    )
    [message] = problems(text)
    assert "duplicate key 'description'" in message


def test_unknown_rule_key_suggests() -> None:
    text = one_rule('{field: health.sti_symptoms, op: "==", value: true}').replace(
        "    guideline: g\n", "    guideline: g\n    gudeline: h\n"
    )
    [message] = problems(text)
    assert "unknown key 'gudeline'" in message
    assert "did you mean 'guideline'" in message


def test_unknown_definition_suggests() -> None:
    [message] = problems(one_rule("presumed_minr"))
    assert "unknown definition 'presumed_minr'" in message
    assert "did you mean 'presumed_minor'" in message


def test_child_protection_duty_must_require_the_child_definition() -> None:
    head = "service: protection\nurgency: urgent\nlegal_basis: child_protection_duty\n"
    [message] = problems(one_rule('{field: health.sti_symptoms, op: "==", value: true}', head=head))
    assert "child_protection_duty needs" in message


def test_reason_needs_spanish_and_english() -> None:
    text = one_rule('{field: health.sti_symptoms, op: "==", value: true}').replace(
        '{es: "r", en: "r"}', '{es: "r"}'
    )
    [message] = problems(text)
    assert "reason.en" in message


def test_version_must_be_quoted_text() -> None:
    text = rule_file(
        one_rule('{field: health.sti_symptoms, op: "==", value: true}').split("rules:\n", 1)[1],
        version="1.2",
    )
    [message] = problems(text)
    assert "version" in message


def test_every_problem_is_reported_at_once() -> None:
    rules = """
    - id: a
      description: d
      guideline: g
      service: medicl
      urgency: routine
      legal_basis: consent
      reason: {es: r, en: r}
      when: {field: subject.agee, op: "<", value: 18, if_missing: false}
    - id: b
      description: d
      guideline: g
      service: legal
      urgency: soon
      legal_basis: consent
      reason: {es: r, en: r}
      when: {field: subject.sex, op: "<", value: female}
    """
    messages = problems(rule_file(rules))
    assert len(messages) == 4
    assert any("rule 'a'" in m and "medicl" in m for m in messages)
    assert any("rule 'b'" in m and "soon" in m for m in messages)


def test_unused_and_cyclic_definitions() -> None:
    extra_defs = (
        "  loop_a: loop_b\n  loop_b: loop_a\n"
        '  unused_one: {field: health.sti_symptoms, op: "==", value: true}\n'
    )
    text = one_rule("loop_a").replace(
        "  lacks_capacity: {field", extra_defs + "  lacks_capacity: {field", 1
    )
    messages = problems(text)
    assert any("refers to itself" in m for m in messages)
    assert any("unused_one" in m and "never used" in m for m in messages)


def test_flag_rule_needs_flags_and_no_urgency() -> None:
    head = "urgency: routine\n"
    messages = problems(one_rule('{field: health.sti_symptoms, op: "==", value: true}', head=head))
    assert any("needs a service" in m for m in messages)


def test_alias_bomb_is_refused() -> None:
    lines = ["a0: &a0 [x]"] + [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]" for i in range(1, 60)]
    with pytest.raises(RuleFileError) as info:
        build("\n".join(lines) + "\n")
    assert "aliases" in str(info.value)


def test_not_yaml() -> None:
    [message] = problems("version: [unclosed\n")
    assert "not valid YAML" in message


def test_load_rule_set_reports_a_missing_file(tmp_path: pytest.TempPathFactory) -> None:
    with pytest.raises(RuleFileError) as info:
        load_rule_set("/nonexistent/rules.yaml")
    assert "cannot read" in str(info.value)


def test_a_file_that_fails_never_yields_a_rule_set(tmp_path: object) -> None:
    """The loader raises; there is no partial set to use by mistake."""
    good = '{field: health.sti_symptoms, op: "==", value: true}'
    text = one_rule(good) + (
        "  - id: bad\n    description: d\n    guideline: g\n    service: medical\n"
        "    urgency: routine\n    legal_basis: consent\n    reason: {es: r, en: r}\n"
        "    when: {field: nope, op: is_known}\n"
    )
    with pytest.raises(RuleFileError) as info:
        build(text)
    [problem] = info.value.problems
    assert problem.rule_id == "bad"
    assert "unknown field 'nope'" in problem.message


def test_default_protocol_loads() -> None:
    rule_set = load_rule_set()
    assert rule_set.version
    assert len(rule_set.rules) >= 20
