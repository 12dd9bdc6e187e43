"""Fuzzing the rule-file loader: whatever text it is given, it either returns a compiled
rule set or raises RuleFileError. It never crashes otherwise, and a mutated valid file never
loads into something that behaves differently without saying so."""

from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.rules import DEFAULT_RULES_PATH, RuleFileError, rule_set_from_text
from tests.factories import screening
from tests.rules.helpers import one_rule

VALID = one_rule('{field: health.sti_symptoms, op: "==", value: true}')
PROTOCOL = DEFAULT_RULES_PATH.read_text()
YAML_ALPHABET = string.ascii_letters + string.digits + " :-_{}[],.\"'\n#&*!|>%@`"


def _load(text: str) -> None:
    problems: list[str] = []
    try:
        rule_set_from_text(text, source_name="fuzz.yaml")
    except RuleFileError as exc:
        problems = [str(p) for p in exc.problems]
        assert problems, "a RuleFileError always names its problems"
    assert all(problems)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=YAML_ALPHABET, max_size=400))
def test_arbitrary_text_loads_or_fails_cleanly(text: str) -> None:
    _load(text)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=len(VALID) - 1), st.text(YAML_ALPHABET, max_size=12))
def test_spliced_valid_files_load_or_fail_cleanly(position: int, insert: str) -> None:
    _load(VALID[:position] + insert + VALID[position:])


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=len(PROTOCOL) - 1), st.integers(1, 40))
def test_truncated_protocol_never_loads_half(position: int, cut: int) -> None:
    """Deleting a span of the default protocol either still loads (and then evaluates) or
    fails as a whole: there is never a partial rule set."""
    text = PROTOCOL[:position] + PROTOCOL[position + cut :]
    try:
        rule_set = rule_set_from_text(text, source_name="cut.yaml")
    except RuleFileError:
        return
    from app.schemas.screening import ScreeningIn

    decision = rule_set.evaluate(ScreeningIn.model_validate(screening()), trace=True)
    assert decision.trace is not None
    assert decision.trace.rule_set_hash == rule_set.sha256
