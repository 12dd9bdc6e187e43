"""Rule tests as data: scenario files, each "this screening -> these referrals and rules".

A scenario file has a ``base`` screening and a list of ``scenarios``; each scenario's
``screening`` is deep-merged onto the base (mappings merge, anything else replaces, ``null``
deletes a key). Expectations:

- ``fired``: exactly the rule ids that fire (consent-policy entries are not listed);
- ``referrals``: exactly these, each with service, recipient (default ``provider``),
  urgency, legal_basis, identifying, flags;
- ``suppressed``: exactly these referrals withheld by the consent policy (default none),
  each ``service`` or ``service/recipient`` (``protection/law_enforcement``);
- ``non_identifying_notification``: default false;
- ``near_miss``: rule ids this scenario is a near miss for (they must not fire);
- ``protocol``: the docs/protocol.md rule numbers this scenario covers;
- ``decided_at``: decide at this moment (default: at ``source.screened_at``), for
  screenings posted late: clinical windows run from the event to the decision.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from app.rules.engine import RuleSet, key_label
from app.rules.facts import facts_at
from app.rules.yamlsafe import YamlTrap, load_yaml
from app.schemas.decision import Decision, Recipient
from app.schemas.screening import ScreeningIn, ServiceCategory

DEFAULT_SCENARIOS_DIR = Path(__file__).parent / "default" / "scenarios"
SCENARIO_KEYS = frozenset(
    {
        "name",
        "description",
        "domain",
        "screening",
        "fired",
        "referrals",
        "suppressed",
        "non_identifying_notification",
        "near_miss",
        "protocol",
        "decided_at",
    }
)
REFERRAL_KEYS = frozenset(
    {"service", "recipient", "urgency", "legal_basis", "identifying", "flags"}
)


class ScenarioError(Exception):
    """A scenario file that cannot be read (not a failing scenario)."""


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


@dataclass(frozen=True)
class Scenario:
    file: str
    name: str
    screening: ScreeningIn
    fired: frozenset[str]
    referrals: dict[str, dict[str, Any]]
    suppressed: frozenset[str]
    non_identifying_notification: bool
    near_miss: frozenset[str]
    protocol: frozenset[int]
    decided_at: datetime | None = None

    @property
    def label(self) -> str:
        return f"{Path(self.file).name}::{self.name}"


@dataclass
class ScenarioResult:
    scenario: Scenario
    fired: list[str]
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def _referral(raw: Any, where: str) -> tuple[str, dict[str, Any]]:
    if not isinstance(raw, dict) or set(raw) - REFERRAL_KEYS or "service" not in raw:
        raise ScenarioError(f"{where}: a referral has {', '.join(sorted(REFERRAL_KEYS))}")
    missing = {"urgency", "legal_basis", "identifying"} - set(raw)
    if missing:
        raise ScenarioError(f"{where}: referral needs {', '.join(sorted(missing))}")
    expected = {
        "urgency": str(raw["urgency"]),
        "legal_basis": str(raw["legal_basis"]),
        "identifying": bool(raw["identifying"]),
        "flags": sorted(str(f) for f in raw.get("flags", [])),
    }
    try:
        key = key_label(
            ServiceCategory(raw["service"]), Recipient(raw.get("recipient", "provider"))
        )
    except ValueError:
        raise ScenarioError(f"{where}: unknown service or recipient") from None
    return key, expected


def load_scenarios(path: Path) -> list[Scenario]:
    """Read one scenario file. Raises ``ScenarioError`` naming the file and scenario."""
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except YamlTrap as exc:
        raise ScenarioError(f"{path}:{exc.line}: {exc.message}") from None
    except Exception as exc:
        raise ScenarioError(f"{path}: cannot read: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("scenarios"), list):
        raise ScenarioError(f"{path}: needs base and a list of scenarios")
    base = data.get("base") or {}
    out = []
    names: set[str] = set()
    for index, raw in enumerate(data["scenarios"]):
        where = f"{path}: scenarios[{index}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise ScenarioError(f"{where}: needs a name")
        name = raw["name"]
        where = f"{path}: scenario {name!r}"
        if name in names:
            raise ScenarioError(f"{where}: duplicate name")
        names.add(name)
        unknown = set(raw) - SCENARIO_KEYS
        if unknown:
            raise ScenarioError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
        for needed in ("fired", "referrals"):
            if not isinstance(raw.get(needed), list):
                raise ScenarioError(f"{where}: {needed} must be a list (may be empty)")
        document = deep_merge(base, raw.get("screening") or {})
        try:
            screening = ScreeningIn.model_validate(document)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise ScenarioError(f"{where}: invalid screening at {loc}: {first['msg']}") from None
        referrals = dict(_referral(r, where) for r in raw["referrals"])
        decided_at = raw.get("decided_at")
        if decided_at is not None:
            try:
                decided_at = datetime.fromisoformat(str(decided_at))
            except ValueError:
                raise ScenarioError(f"{where}: decided_at is not an ISO 8601 time") from None
            if decided_at.tzinfo is None:
                raise ScenarioError(f"{where}: decided_at needs an offset")
        out.append(
            Scenario(
                file=str(path),
                name=name,
                screening=screening,
                fired=frozenset(str(r) for r in raw["fired"]),
                referrals=referrals,
                suppressed=frozenset(str(s) for s in raw.get("suppressed", [])),
                non_identifying_notification=bool(raw.get("non_identifying_notification", False)),
                near_miss=frozenset(str(r) for r in raw.get("near_miss", [])),
                protocol=frozenset(int(d) for d in raw.get("protocol", [])),
                decided_at=decided_at,
            )
        )
    return out


def load_scenario_dir(directory: Path = DEFAULT_SCENARIOS_DIR) -> list[Scenario]:
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise ScenarioError(f"{directory}: no scenario files (*.yaml)")
    scenarios: list[Scenario] = []
    for path in files:
        scenarios.extend(load_scenarios(path))
    return scenarios


def _actual_referrals(decision: Decision) -> dict[str, dict[str, Any]]:
    return {
        key_label(r.service, r.recipient): {
            "urgency": r.urgency.value,
            "legal_basis": r.legal_basis.value,
            "identifying": r.identifying,
            "flags": sorted(f.value for f in r.flags),
        }
        for r in decision.referrals
    }


def run_scenario(rule_set: RuleSet, scenario: Scenario) -> ScenarioResult:
    decision = rule_set.decide(facts_at(scenario.screening, scenario.decided_at), trace=True)
    assert decision.trace is not None
    fired = [f.rule_id for f in decision.trace.fired if not f.rule_id.startswith("consent-")]
    result = ScenarioResult(scenario, fired)
    fail = result.failures.append
    unknown = (scenario.fired | scenario.near_miss) - set(rule_set.by_id)
    if unknown:
        fail(f"names rules the rule set does not have: {', '.join(sorted(unknown))}")
    if set(fired) != scenario.fired:
        extra = sorted(set(fired) - scenario.fired)
        missing = sorted(scenario.fired - set(fired))
        fail(f"fired rules differ: unexpected {extra}, missing {missing}")
    if scenario.near_miss & set(fired):
        fail(f"near-miss rules fired: {sorted(scenario.near_miss & set(fired))}")
    actual = _actual_referrals(decision)
    for service in sorted(set(actual) | set(scenario.referrals)):
        want, got = scenario.referrals.get(service), actual.get(service)
        if want != got:
            fail(f"{service}: expected {want}, got {got}")
    suppressed = {
        str(s["service"]) + (f"/{s['recipient']}" if "recipient" in s else "")
        for s in decision.trace.suppressed
    }
    if suppressed != scenario.suppressed:
        fail(f"suppressed: expected {sorted(scenario.suppressed)}, got {sorted(suppressed)}")
    if decision.non_identifying_notification != scenario.non_identifying_notification:
        fail(
            "non_identifying_notification: expected "
            f"{scenario.non_identifying_notification}, got {decision.non_identifying_notification}"
        )
    return result


@dataclass(frozen=True)
class Coverage:
    never_fired: list[str]
    no_near_miss: list[str]
    protocol_rules_missing: list[int]

    @property
    def ok(self) -> bool:
        return not (self.never_fired or self.no_near_miss or self.protocol_rules_missing)


#: docs/protocol.md rules the rules engine decides, each of which the default protocol's
#: scenarios must cover. 15 (need to know) belongs to the payload minimiser and 14 (consent
#: withdrawn) to the referral service: both are tested there.
PROTOCOL_RULES = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13)


def coverage(
    rule_set: RuleSet, results: list[ScenarioResult], protocol_rules: tuple[int, ...] = ()
) -> Coverage:
    """Every rule fires somewhere and is silent in a declared near miss, and every listed
    protocol rule has a scenario."""
    fired = {rule_id for r in results for rule_id in r.fired}
    silent_near_miss = {
        rule_id for r in results for rule_id in r.scenario.near_miss if rule_id not in r.fired
    }
    covered = {d for r in results for d in r.scenario.protocol}
    ids = [c.rule.id for c in rule_set.rules]
    return Coverage(
        never_fired=[i for i in ids if i not in fired],
        no_near_miss=[i for i in ids if i not in silent_near_miss],
        protocol_rules_missing=[d for d in protocol_rules if d not in covered],
    )
