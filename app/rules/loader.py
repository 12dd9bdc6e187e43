"""Read a rule file, check it against the screening schema, and build its validated form.

Every problem is collected and reported together, each with the file, the rule id and the
path inside the rule. A file with any problem raises ``RuleFileError``; nothing half-valid
leaves this module.
"""

from __future__ import annotations

import difflib
import math
import re
from enum import Enum
from typing import Any

import yaml

from app.rules.errors import RuleFileError, RuleProblem
from app.rules.symbols import FORBIDDEN, SYMBOLS, Field, Kind
from app.rules.syntax import (
    CONSENT_TEXT_KEYS,
    LAW_ENFORCEMENT_TEXTS,
    REQUIRED_CONSENT_TEXTS,
    AllOf,
    AnyOf,
    Compare,
    Condition,
    ConsentPolicy,
    Not,
    Ref,
    Rule,
    RuleFile,
    refs_in,
    requires,
)
from app.rules.yamlsafe import YamlTrap, load_yaml
from app.schemas.decision import LegalBasis, Recipient, ReferralFlag, Urgency
from app.schemas.screening import ServiceCategory

OPERATORS: dict[Kind, tuple[str, ...]] = {
    Kind.boolean: ("==", "!="),
    Kind.integer: ("==", "!=", "<", "<=", ">", ">="),
    Kind.number: ("==", "!=", "<", "<=", ">", ">="),
    Kind.text: ("==", "!=", "in", "not_in"),
    Kind.choice: ("==", "!=", "in", "not_in"),
    Kind.choices: (
        "contains",
        "not_contains",
        "contains_any",
        "contains_none",
        "is_empty",
        "is_not_empty",
    ),
}
MISSING_OPERATORS = ("is_missing", "is_known")
#: Operators that take no value.
UNARY_OPERATORS = (*MISSING_OPERATORS, "is_empty", "is_not_empty")
ALL_OPERATORS = frozenset({op for ops in OPERATORS.values() for op in ops} | set(MISSING_OPERATORS))
LIST_OPERATORS = frozenset({"in", "not_in", "contains_any", "contains_none"})

RULE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
TOP_KEYS = ("version", "title", "definitions", "consent_policy", "rules")
RULE_KEYS = (
    "id",
    "description",
    "guideline",
    "service",
    "urgency",
    "legal_basis",
    "flags",
    "reason",
    "when",
    "recipient",
    "protocol",
)
LEAF_KEYS = ("field", "op", "value", "if_missing")
POLICY_KEYS = ("guideline", "child", "lacks_capacity", "texts")
MAX_DEPTH = 12


def _suggest(word: str, options: Any) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Checker:
    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[RuleProblem] = []
        self.rule_id: str | None = None

    def error(self, path: str, message: str) -> None:
        self.problems.append(RuleProblem(self.file, message, self.rule_id, path))

    def keys(self, data: dict[Any, Any], allowed: tuple[str, ...], path: str) -> None:
        for key in data:
            if key not in allowed:
                where = f"{path}.{key}" if path else str(key)
                self.error(where, f"unknown key {key!r}{_suggest(str(key), allowed)}")

    def text(self, data: dict[str, Any], key: str, path: str, *, required: bool = True) -> str:
        value = data.get(key)
        if value is None:
            if required:
                self.error(f"{path}.{key}".lstrip("."), "is required")
            return ""
        if not isinstance(value, str) or not value.strip():
            self.error(f"{path}.{key}".lstrip("."), "must be non-empty text (quote it)")
            return ""
        return value.strip()

    def enum(self, value: Any, enum: type[Enum], path: str) -> Any:
        try:
            return enum(value)
        except ValueError:
            options = [str(m.value) for m in enum]
            self.error(
                path,
                f"{value!r} is not one of {', '.join(options)}{_suggest(str(value), options)}",
            )
            return None

    def locales(self, value: Any, path: str) -> dict[str, str]:
        if not isinstance(value, dict):
            self.error(path, "must map locales to text, with at least es and en")
            return {}
        out: dict[str, str] = {}
        for locale, text in value.items():
            if not isinstance(locale, str) or not re.fullmatch(r"[a-z]{2,3}", locale):
                self.error(f"{path}.{locale}", "locale must be a language code like es, en")
            elif not isinstance(text, str) or not text.strip():
                self.error(f"{path}.{locale}", "must be non-empty text")
            else:
                out[locale] = " ".join(text.split())
        for needed in ("es", "en"):
            if needed not in value:
                self.error(f"{path}.{needed}", "is required (Spanish and English at least)")
        return out

    # conditions -----------------------------------------------------------------

    def condition(self, data: Any, path: str, names: set[str], depth: int = 0) -> Condition:
        if depth > MAX_DEPTH:
            self.error(path, f"conditions nest deeper than {MAX_DEPTH} levels")
            return AllOf(())
        if isinstance(data, str):
            if data not in names:
                hint = _suggest(data, names)
                if data in SYMBOLS or data in FORBIDDEN:
                    hint = " (a field needs a comparison: {field: ..., op: ..., value: ...})"
                self.error(path, f"unknown definition {data!r}{hint}")
            return Ref(data)
        if not isinstance(data, dict) or not data:
            self.error(path, "a condition is a definition name, all/any/not, or a comparison")
            return AllOf(())
        combinators = [k for k in ("all", "any", "not") if k in data]
        if combinators:
            if len(data) != 1:
                self.error(path, "all/any/not must be the only key of its condition")
                return AllOf(())
            key = combinators[0]
            inner = data[key]
            if key == "not":
                return Not(self.condition(inner, f"{path}.not", names, depth + 1))
            if not isinstance(inner, list) or not inner:
                self.error(f"{path}.{key}", "must be a non-empty list of conditions")
                return AllOf(())
            items = tuple(
                self.condition(item, f"{path}.{key}[{i}]", names, depth + 1)
                for i, item in enumerate(inner)
            )
            return AllOf(items) if key == "all" else AnyOf(items)
        return self.compare(data, path)

    def compare(self, data: dict[Any, Any], path: str) -> Condition:
        self.keys(data, LEAF_KEYS, path)
        broken = AllOf(())
        name = data.get("field")
        op = data.get("op")
        if not isinstance(name, str):
            self.error(f"{path}.field", "is required: a screening field such as subject.age")
            return broken
        if name in FORBIDDEN:
            self.error(f"{path}.field", f"{name!r} {FORBIDDEN[name]}")
            return broken
        field = SYMBOLS.get(name)
        if field is None:
            self.error(f"{path}.field", f"unknown field {name!r}{_suggest(name, SYMBOLS)}")
            return broken
        if not isinstance(op, str) or op not in ALL_OPERATORS:
            self.error(
                f"{path}.op",
                f"unknown operator {op!r}{_suggest(str(op), ALL_OPERATORS)}; "
                f"{name} allows {', '.join(self._ops(field))}",
            )
            return broken
        if op not in self._ops(field):
            self.error(
                f"{path}.op",
                f"operator {op!r} is not allowed on {name} ({field.describe()}); "
                f"allowed: {', '.join(self._ops(field))}",
            )
            return broken
        if_missing = data.get("if_missing")
        if op in UNARY_OPERATORS:
            if "value" in data or "if_missing" in data:
                self.error(path, f"{op} takes no value and no if_missing")
            return Compare(field, op, None, None)
        if field.nullable:
            if not isinstance(if_missing, bool):
                self.error(
                    f"{path}.if_missing",
                    f"{name} may be unknown (null): say what this comparison yields then, "
                    "with if_missing: true or if_missing: false",
                )
                return broken
        elif "if_missing" in data:
            self.error(f"{path}.if_missing", f"{name} is never unknown; remove if_missing")
            return broken
        if "value" not in data:
            self.error(f"{path}.value", "is required")
            return broken
        value = self.value(field, op, data["value"], f"{path}.value")
        if value is None:
            return broken
        return Compare(field, op, value, if_missing)

    @staticmethod
    def _ops(field: Field) -> tuple[str, ...]:
        return OPERATORS[field.kind] + (MISSING_OPERATORS if field.nullable else ())

    def value(self, field: Field, op: str, raw: Any, path: str) -> Any:
        if op in LIST_OPERATORS:
            if not isinstance(raw, list) or not raw:
                self.error(path, f"{op} needs a non-empty list of values")
                return None
            items = [self.scalar(field, item, f"{path}[{i}]") for i, item in enumerate(raw)]
            if any(item is None for item in items):
                return None
            return frozenset(items)
        if isinstance(raw, list):
            self.error(path, f"{op} compares with one value, not a list")
            return None
        return self.scalar(field, raw, path)

    def scalar(self, field: Field, raw: Any, path: str) -> Any:
        kind = field.kind
        if raw is None:
            self.error(path, "null is not a value: use is_missing / is_known or if_missing")
            return None
        if kind is Kind.boolean:
            if not isinstance(raw, bool):
                self.error(path, f"{field.path} is true/false; got {type(raw).__name__}")
                return None
            return raw
        if kind in (Kind.integer, Kind.number):
            ok = isinstance(raw, int) and not isinstance(raw, bool)
            if kind is Kind.number:
                ok = ok or (isinstance(raw, float) and math.isfinite(raw))
            if not ok:
                self.error(path, f"{field.path} is {field.describe()}; got {type(raw).__name__}")
                return None
            if (field.minimum is not None and raw < field.minimum) or (
                field.maximum is not None and raw > field.maximum
            ):
                self.error(
                    path,
                    f"{raw!r} is outside {field.path}'s range {field.minimum}..{field.maximum}",
                )
                return None
            return raw
        if not isinstance(raw, str):
            self.error(path, f"{field.path} takes text values; got {type(raw).__name__}")
            return None
        if kind is Kind.text:
            if field.pattern is not None and not field.pattern.fullmatch(raw):
                self.error(path, f"{raw!r} does not match {field.path}'s format")
                return None
            return raw
        assert field.enum is not None
        return self.enum(raw, field.enum, path)

    # rules ----------------------------------------------------------------------

    def rule(self, data: Any, index: int, names: set[str], seen: set[str]) -> Rule | None:
        path = f"rules[{index}]"
        self.rule_id = None
        if not isinstance(data, dict):
            self.error(path, "a rule is a mapping with id, description, guideline, reason, when")
            return None
        rule_id = data.get("id")
        if not isinstance(rule_id, str) or not RULE_ID.match(rule_id):
            self.error(f"{path}.id", "is required: lowercase letters, digits and dashes")
            rule_id = f"#{index}"
        elif rule_id in seen:
            self.rule_id = rule_id
            self.error(f"{path}.id", f"duplicate rule id {rule_id!r}")
        seen.add(rule_id)
        self.rule_id = rule_id
        before = len(self.problems)
        self.keys(data, RULE_KEYS, "")
        description = self.text(data, "description", "")
        guideline = self.text(data, "guideline", "")
        reason = self.locales(data.get("reason"), "reason")
        service = urgency = basis = None
        if data.get("service") is not None:
            service = self.enum(data["service"], ServiceCategory, "service")
            for key in ("urgency", "legal_basis"):
                if data.get(key) is None:
                    self.error(key, "is required for a referral rule (one with a service)")
            if data.get("urgency") is not None:
                urgency = self.enum(data["urgency"], Urgency, "urgency")
            if data.get("legal_basis") is not None:
                basis = self.enum(data["legal_basis"], LegalBasis, "legal_basis")
        else:
            for key in ("urgency", "legal_basis"):
                if key in data:
                    self.error(key, "needs a service; a rule without a service only sets flags")
        raw_flags = data.get("flags", [])
        flags: set[ReferralFlag] = set()
        if not isinstance(raw_flags, list):
            self.error("flags", "must be a list")
        else:
            for i, flag in enumerate(raw_flags):
                value = self.enum(flag, ReferralFlag, f"flags[{i}]")
                if value is not None:
                    flags.add(value)
        if service is None and "service" not in data and not flags:
            self.error("service", "is required, unless the rule only sets flags (then: flags)")
        recipient = self.recipient(data, service, basis)
        if ReferralFlag.life_at_risk in flags and urgency is not Urgency.emergency:
            self.error("flags", "life_at_risk belongs on an emergency referral rule")
        protocol = self.protocol(data.get("protocol"))
        if "when" not in data:
            self.error("when", "is required")
            when: Condition = AllOf(())
        else:
            when = self.condition(data["when"], "when", names)
        if len(self.problems) > before:
            return None
        return Rule(
            id=rule_id,
            description=description,
            guideline=guideline,
            service=service,
            urgency=urgency,
            legal_basis=basis,
            flags=frozenset(flags),
            reason=reason,
            when=when,
            recipient=recipient or Recipient.provider,
            protocol=protocol,
        )

    def recipient(
        self, data: dict[str, Any], service: ServiceCategory | None, basis: LegalBasis | None
    ) -> Recipient | None:
        """The rule's recipient, checked against what the protocol allows each kind."""
        if data.get("recipient") is None:
            return Recipient.provider
        if service is None:
            self.error("recipient", "needs a service; a rule without a service only sets flags")
            return None
        recipient: Recipient | None = self.enum(data["recipient"], Recipient, "recipient")
        if recipient is Recipient.law_enforcement:
            if basis is not None and basis is not LegalBasis.consent:
                self.error(
                    "legal_basis",
                    "a law_enforcement referral rests on consent only (the law_enforcement "
                    "scope), never on vital_interest or child_protection_duty",
                )
            if service not in (ServiceCategory.protection, ServiceCategory.legal):
                self.error("service", "law enforcement is a protection or legal partner role")
        elif (
            recipient in (Recipient.child_protection_authority, Recipient.shelter)
            and service is not ServiceCategory.protection
        ):
            self.error("service", f"{recipient.value} is a protection partner role")
        return recipient

    def protocol(self, raw: Any) -> tuple[int, ...]:
        if raw is None:
            return ()
        ok = isinstance(raw, list) and all(
            isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 99 for n in raw
        )
        if not ok:
            self.error("protocol", "is a list of rule numbers of docs/protocol.md, e.g. [1, 4]")
            return ()
        return tuple(sorted(set(raw)))


def _cycles(definitions: dict[str, Condition]) -> list[str]:
    state: dict[str, int] = {}
    cyclic: list[str] = []

    def visit(name: str) -> None:
        if state.get(name) == 2 or name not in definitions:
            return
        if state.get(name) == 1:
            cyclic.append(name)
            return
        state[name] = 1
        for ref in sorted(refs_in(definitions[name])):
            visit(ref)
        state[name] = 2

    for name in definitions:
        visit(name)
    return cyclic


def parse_rule_file(text: str, file: str) -> RuleFile:
    """Validate rule-file text. Raises ``RuleFileError`` listing every problem."""
    check = _Checker(file)
    try:
        data = load_yaml(text)
    except YamlTrap as exc:
        raise RuleFileError([RuleProblem(file, exc.message, line=exc.line)]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = int(mark.line) + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise RuleFileError([RuleProblem(file, f"not valid YAML: {problem}", line=line)]) from None
    if not isinstance(data, dict):
        raise RuleFileError([RuleProblem(file, "a rule file is a mapping with version and rules")])
    check.keys(data, TOP_KEYS, "")
    version = data.get("version")
    if not isinstance(version, str) or not version.strip():
        check.error("version", "is required and must be quoted text, e.g. version: '2026.11'")
        version = ""
    title = data.get("title", "")
    if not isinstance(title, str):
        check.error("title", "must be text")
        title = ""

    raw_defs = data.get("definitions", {}) or {}
    definitions: dict[str, Condition] = {}
    if not isinstance(raw_defs, dict):
        check.error("definitions", "must map names to conditions")
        raw_defs = {}
    names = {str(n) for n in raw_defs}
    for name, body in raw_defs.items():
        if not isinstance(name, str) or not NAME.match(name):
            check.error(f"definitions.{name}", "names are lowercase_with_underscores")
            continue
        if name in SYMBOLS:
            check.error(f"definitions.{name}", "a definition may not be named like a field")
        definitions[name] = check.condition(body, f"definitions.{name}", names)
    for name in _cycles(definitions):
        check.error(f"definitions.{name}", "refers to itself through other definitions")

    policy = _policy(check, data.get("consent_policy"), names)

    raw_rules = data.get("rules")
    rules: list[Rule] = []
    if not isinstance(raw_rules, list) or not raw_rules:
        check.error("rules", "is required: a non-empty list of rules")
        raw_rules = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_rules):
        rule = check.rule(raw, index, names, seen)
        if rule is None:
            continue
        check.rule_id = rule.id
        if (
            policy is not None
            and rule.legal_basis is LegalBasis.child_protection_duty
            and not requires(rule.when, policy.child)
        ):
            check.error(
                "legal_basis",
                "child_protection_duty needs the rule's condition to require "
                f"{policy.child!r} (when: {{all: [{policy.child}, ...]}})",
            )
        if (
            policy is not None
            and rule.recipient in (Recipient.child_protection_authority, Recipient.shelter)
            and not requires(rule.when, policy.child)
        ):
            check.error(
                "recipient",
                f"{rule.recipient.value} referrals are a child's: the condition must require "
                f"{policy.child!r} (adults' protection goes to recipient: provider)",
            )
        rules.append(rule)
    check.rule_id = None
    if policy is not None and any(r.recipient is Recipient.law_enforcement for r in rules):
        for key in LAW_ENFORCEMENT_TEXTS:
            if key not in policy.texts:
                check.error(
                    f"consent_policy.texts.{key}",
                    "is required when a rule refers to law enforcement: what the person is "
                    "told when the referral is withheld",
                )
    used = set().union(*(refs_in(r.when) for r in rules)) if rules else set()
    for body in definitions.values():
        used |= refs_in(body)
    if policy is not None:
        used |= {policy.child, policy.lacks_capacity}
    for name in definitions:
        if name not in used:
            check.error(f"definitions.{name}", "is never used")
    if check.problems:
        raise RuleFileError(check.problems)
    assert policy is not None
    return RuleFile(
        version=str(version).strip(),
        title=title.strip(),
        definitions=definitions,
        consent_policy=policy,
        rules=tuple(rules),
    )


def _policy(check: _Checker, raw: Any, names: set[str]) -> ConsentPolicy | None:
    if not isinstance(raw, dict):
        check.error("consent_policy", "is required: guideline, child, lacks_capacity, texts")
        return None
    check.keys(raw, POLICY_KEYS, "consent_policy")
    guideline = check.text(raw, "guideline", "consent_policy")
    refs = {}
    for key in ("child", "lacks_capacity"):
        name = raw.get(key)
        if not isinstance(name, str) or name not in names:
            check.error(
                f"consent_policy.{key}",
                f"must name a definition{_suggest(str(name), names)}",
            )
        refs[key] = str(name)
    texts_raw = raw.get("texts")
    texts: dict[str, dict[str, str]] = {}
    if not isinstance(texts_raw, dict):
        check.error("consent_policy.texts", f"is required: {', '.join(REQUIRED_CONSENT_TEXTS)}")
    else:
        check.keys(texts_raw, CONSENT_TEXT_KEYS, "consent_policy.texts")
        for key in CONSENT_TEXT_KEYS:
            if key in REQUIRED_CONSENT_TEXTS or key in texts_raw:
                texts[key] = check.locales(texts_raw.get(key), f"consent_policy.texts.{key}")
    return ConsentPolicy(guideline, refs["child"], refs["lacks_capacity"], texts)
