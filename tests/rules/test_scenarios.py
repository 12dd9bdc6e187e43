"""The default protocol's scenario files, table-driven, and the coverage gate."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.rules import RuleSet, load_rule_set
from app.rules.scenarios import (
    PROTOCOL_RULES,
    ScenarioError,
    coverage,
    deep_merge,
    load_scenario_dir,
    load_scenarios,
    run_scenario,
)

RULE_SET = load_rule_set()
SCENARIOS = load_scenario_dir()


@pytest.fixture(scope="module")
def rule_set() -> RuleSet:
    return RULE_SET


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.label for s in SCENARIOS])
def test_scenario(rule_set: RuleSet, scenario: object) -> None:
    from app.rules.scenarios import Scenario

    assert isinstance(scenario, Scenario)
    result = run_scenario(rule_set, scenario)
    assert result.ok, "\n".join(result.failures)


def test_coverage_gate(rule_set: RuleSet) -> None:
    """Every rule fires in a scenario and is silent in a near miss; docs/protocol.md rules
    covered."""
    results = [run_scenario(rule_set, s) for s in SCENARIOS]
    gate = coverage(rule_set, results, PROTOCOL_RULES)
    assert gate.never_fired == []
    assert gate.no_near_miss == []
    assert gate.protocol_rules_missing == []


def test_coverage_gate_notices_a_rule_without_scenarios(rule_set: RuleSet) -> None:
    results = [run_scenario(rule_set, s) for s in SCENARIOS if "pregnancy" not in s.near_miss]
    assert "pregnancy" in coverage(rule_set, results, PROTOCOL_RULES).no_near_miss
    results = [r for r in results if "pregnancy" not in r.fired and 6 not in r.scenario.protocol]
    gate = coverage(rule_set, results, PROTOCOL_RULES)
    assert "pregnancy" in gate.never_fired
    assert 6 in gate.protocol_rules_missing


def test_a_wrong_expectation_fails(rule_set: RuleSet, tmp_path: Path) -> None:
    path = tmp_path / "wrong.yaml"
    base = (Path(__file__).parents[2] / "app/rules/default/scenarios/medical.yaml").read_text()
    head = base.split("scenarios:")[0]
    path.write_text(
        head
        + "scenarios:\n"
        + "  - name: wrong\n"
        + "    screening: {health: {sti_symptoms: true}}\n"
        + "    fired: [sti-symptoms, pregnancy]\n"
        + "    referrals:\n"
        + "      - {service: medical, urgency: routine, legal_basis: consent, identifying: true}\n"
    )
    [scenario] = load_scenarios(path)
    result = run_scenario(rule_set, scenario)
    assert not result.ok
    assert any("missing ['pregnancy']" in f for f in result.failures)
    assert any(f.startswith("medical: expected") for f in result.failures)


def test_invalid_scenario_screening_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "base: {}\nscenarios:\n  - name: x\n    screening: {subject: {age: 5}}\n"
        "    fired: []\n    referrals: []\n"
    )
    with pytest.raises(ScenarioError, match="invalid screening"):
        load_scenarios(path)


def test_deep_merge() -> None:
    base = {"a": {"b": 1, "c": 2}, "d": [1]}
    assert deep_merge(base, {"a": {"b": 3, "c": None}, "d": [2]}) == {"a": {"b": 3}, "d": [2]}
    assert base == {"a": {"b": 1, "c": 2}, "d": [1]}


def test_decided_at_needs_an_offset(tmp_path: Path) -> None:
    path = tmp_path / "naive.yaml"
    base = (Path(__file__).parents[2] / "app/rules/default/scenarios/medical.yaml").read_text()
    path.write_text(
        base.split("scenarios:")[0]
        + "scenarios:\n  - name: x\n    decided_at: '2026-11-23T09:40:00'\n"
        + "    fired: []\n    referrals: []\n"
    )
    with pytest.raises(ScenarioError, match="decided_at needs an offset"):
        load_scenarios(path)


def test_protocol_rules_cited_exist_in_docs() -> None:
    """Every docs/protocol.md rule number a rule or scenario cites is a heading there."""
    import re

    text = (Path(__file__).parents[2] / "docs/protocol.md").read_text(encoding="utf-8")
    numbered = {int(n) for n in re.findall(r"^### (\d+)\. ", text, flags=re.MULTILINE)}
    cited = {n for c in RULE_SET.rules for n in c.rule.protocol}
    cited |= {n for s in SCENARIOS for n in s.protocol}
    assert cited <= numbered, sorted(cited - numbered)
    assert all(c.rule.protocol for c in RULE_SET.rules), "every default rule cites the protocol"
