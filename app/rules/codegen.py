"""Compile a validated rule file into one Python function, once, at load.

The source is generated only from validated syntax nodes: field paths come from the symbol
table, operators from a fixed table, numbers and texts are ``repr`` of validated constants,
and enum members and sets are passed in as named constants. No text from the rule file is
ever evaluated as code. Generated code runs about as fast as a hand-written if-chain, which
closures do not (see bench/rules.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.rules.symbols import Field, Kind
from app.rules.syntax import (
    AllOf,
    AnyOf,
    Compare,
    Condition,
    Not,
    Ref,
    RuleFile,
    fields_read,
    refs_in,
)

#: (fired rule indices, is the person treated as a child, lacks capacity to consent)
MatchResult = tuple[list[int], bool, bool]
MatchFunction = Callable[[Any], MatchResult]

_COMPARE = {"==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


class _Generator:
    def __init__(self) -> None:
        self.constants: dict[str, Any] = {}
        self.groups: dict[str, str] = {}

    def constant(self, value: Any) -> str:
        if type(value) in (bool, int, float, str):
            return repr(value)
        name = f"K{len(self.constants)}"
        self.constants[name] = value
        return name

    def access(self, field: Field) -> str:
        *parents, attr = field.attrs
        if not parents:
            return f"x.{attr}"
        parent = ".".join(parents)
        local = self.groups.setdefault(parent, "g_" + "_".join(parents))
        return f"{local}.{attr}"

    def compare(self, c: Compare) -> str:
        v = self.access(c.field)
        op = c.op
        if op == "is_missing":
            return f"({v} is None)"
        if op == "is_known":
            return f"({v} is not None)"
        if op == "is_empty":  # choices are never null: a set, perhaps empty
            return f"(not {v})"
        if op == "is_not_empty":
            return f"(bool({v}))"
        if c.field.kind is Kind.boolean and not c.field.nullable:
            truthy = (op == "==") == bool(c.value)
            test = f"({v})" if truthy else f"(not {v})"
        elif op in _COMPARE:
            test = f"({v} {_COMPARE[op]} {self.constant(c.value)})"
        elif op == "in":
            test = f"({v} in {self.constant(c.value)})"
        elif op == "not_in":
            test = f"({v} not in {self.constant(c.value)})"
        elif op == "contains":
            test = f"({self.constant(c.value)} in {v})"
        elif op == "not_contains":
            test = f"({self.constant(c.value)} not in {v})"
        elif op == "contains_any":
            test = f"(not {self.constant(c.value)}.isdisjoint({v}))"
        elif op == "contains_none":
            test = f"({self.constant(c.value)}.isdisjoint({v}))"
        else:  # pragma: no cover - the loader admits only the operators above
            raise AssertionError(op)
        if not c.field.nullable:
            return test
        if c.if_missing:
            return f"({v} is None or {test})"
        return f"({v} is not None and {test})"

    def condition(self, c: Condition) -> str:
        if isinstance(c, Compare):
            return self.compare(c)
        if isinstance(c, AllOf):
            return "(" + " and ".join(self.condition(i) for i in c.items) + ")"
        if isinstance(c, AnyOf):
            return "(" + " or ".join(self.condition(i) for i in c.items) + ")"
        if isinstance(c, Not):
            return f"(not {self.condition(c.item)})"
        assert isinstance(c, Ref)
        return f"d_{c.name}"


def _definition_order(rule_file: RuleFile) -> list[str]:
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        for ref in sorted(refs_in(rule_file.definitions[name])):
            visit(ref)
        order.append(name)

    for name in rule_file.definitions:
        visit(name)
    return order


def generate(rule_file: RuleFile) -> tuple[str, dict[str, Any]]:
    """The source of ``match(x)`` and the constants it needs."""
    gen = _Generator()
    body: list[str] = []
    for name in _definition_order(rule_file):
        body.append(f"    d_{name} = bool({gen.condition(rule_file.definitions[name])})")
    body.append("    fired = []")
    for index, rule in enumerate(rule_file.rules):
        body.append(f"    # {index}: {rule.id}")
        body.append(f"    if {gen.condition(rule.when)}:")
        body.append(f"        fired.append({index})")
    policy = rule_file.consent_policy
    body.append(f"    return fired, d_{policy.child}, d_{policy.lacks_capacity}")
    prelude = [f"    {local} = x.{parent}" for parent, local in sorted(gen.groups.items())]
    source = "def match(x):\n" + "\n".join(prelude + body) + "\n"
    for index, rule in enumerate(rule_file.rules):
        items = []
        for field in fields_read(rule.when, rule_file.definitions):
            value = f"x.{field.path}"
            if field.kind is Kind.choices:
                value = f"sorted({value})"
            items.append(f"{field.path!r}: {value}")
        source += f"\ndef inputs_{index}(x):\n    return {{{', '.join(items)}}}\n"
    return source, gen.constants


InputsFunction = Callable[[Any], dict[str, Any]]


@dataclass(frozen=True)
class Compiled:
    match: MatchFunction
    #: per rule: the values it read, for the trace (sets as sorted lists)
    inputs: tuple[InputsFunction, ...]
    source: str


def compile_rule_file(rule_file: RuleFile, filename: str) -> Compiled:
    source, constants = generate(rule_file)
    namespace: dict[str, Any] = {"__builtins__": {"bool": bool, "sorted": sorted}, **constants}
    code = compile(source, f"<rules {filename}>", "exec")
    exec(code, namespace)  # noqa: S102 - source generated from validated nodes only
    return Compiled(
        match=namespace["match"],
        inputs=tuple(namespace[f"inputs_{i}"] for i in range(len(rule_file.rules))),
        source=source,
    )
