"""The rule-file reader's bounds: nesting and numbers that would otherwise fail outside the
YAML errors (RecursionError, ValueError) are rule-file problems with their line."""

from __future__ import annotations

import pytest

from app.rules import RuleFileError
from app.rules.yamlsafe import MAX_DEPTH, MAX_INT, YamlTrap, load_yaml
from app.schemas.screening import ScreeningIn
from tests.factories import screening
from tests.rules.helpers import build, one_rule


def _trap(text: str) -> YamlTrap:
    with pytest.raises(YamlTrap) as info:
        load_yaml(text)
    return info.value


@pytest.mark.parametrize(
    "text",
    [
        "a: " + "[" * 50_000 + "]" * 50_000,
        "a: " + "{b: " * 50_000 + "1" + "}" * 50_000,
        "- " * (MAX_DEPTH + 1) + "x",
    ],
)
def test_nesting_deeper_than_the_bound_is_refused(text: str) -> None:
    trap = _trap(text)
    assert f"more than {MAX_DEPTH} deep" in trap.message
    assert trap.line == 1


def test_nesting_up_to_the_bound_loads() -> None:
    assert load_yaml("- " * MAX_DEPTH + "x") is not None


@pytest.mark.parametrize(
    "number", ["9" * 100_000, str(MAX_INT + 1), str(-MAX_INT - 1), "+" + "1" * 17]
)
def test_whole_numbers_beyond_the_bound_are_refused(number: str) -> None:
    assert "whole number" in _trap(f"a: 1\nb: {number}\n").message
    assert _trap(f"a: 1\nb: {number}\n").line == 2


@pytest.mark.parametrize("number", ["1.0e+400", "-1.0e+400", "1" * 100_000 + ".5"])
def test_decimals_that_overflow_are_refused(number: str) -> None:
    assert "finite" in _trap(f"a: {number}\n").message


def test_numbers_inside_the_bounds_load() -> None:
    assert load_yaml(f"a: {MAX_INT}\nb: {-MAX_INT}\nc: 0.{'0' * 1000}1\n") == {
        "a": MAX_INT,
        "b": -MAX_INT,
        "c": 0.0,
    }


def test_the_deepest_condition_the_loader_allows_is_far_inside_the_bound() -> None:
    # The loader allows conditions 12 levels deep (one YAML mapping each), and the rule
    # starts three levels down (root mapping, rules list, rule mapping).
    nots = 12
    when = "{not: " * nots + '{field: subject.age, op: "<", value: 18, if_missing: false}'
    rule_set = build(one_rule(when + "}" * nots))
    decision = rule_set.evaluate(ScreeningIn.model_validate(screening(subject__age=16)))
    assert decision.referrals  # an even number of nots: still "under 18"
    assert 3 + nots + 1 < MAX_DEPTH


def test_a_rule_file_too_deep_is_a_rule_file_problem_with_its_line() -> None:
    with pytest.raises(RuleFileError) as info:
        build(one_rule("[" * 50_000 + "]" * 50_000))
    [problem] = info.value.problems
    assert "deep" in problem.message
    assert problem.line is not None
