"""The validated form of a rule file. Only the loader builds these; codegen only reads them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.rules.symbols import Field
from app.schemas.decision import LegalBasis, Recipient, ReferralFlag, Urgency
from app.schemas.screening import ServiceCategory


@dataclass(frozen=True)
class Compare:
    """``field op value``. ``if_missing`` is what the comparison yields when the value is null."""

    field: Field
    op: str
    value: Any
    if_missing: bool | None


@dataclass(frozen=True)
class AllOf:
    items: tuple[Condition, ...]


@dataclass(frozen=True)
class AnyOf:
    items: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    item: Condition


@dataclass(frozen=True)
class Ref:
    """A named condition from ``definitions``."""

    name: str


Condition = Compare | AllOf | AnyOf | Not | Ref


@dataclass(frozen=True)
class Rule:
    id: str
    description: str
    guideline: str
    service: ServiceCategory | None  # None: a flag rule, its flags go on every referral
    urgency: Urgency | None
    legal_basis: LegalBasis | None
    flags: frozenset[ReferralFlag]
    reason: dict[str, str]
    when: Condition
    #: Which kind of partner may receive the referral (only with a service).
    recipient: Recipient = Recipient.provider
    #: The rules of docs/protocol.md this rule implements.
    protocol: tuple[int, ...] = ()


@dataclass(frozen=True)
class ConsentPolicy:
    """Names the definitions the consent step relies on, and the texts it records."""

    guideline: str
    child: str
    lacks_capacity: str
    texts: dict[str, dict[str, str]]


REQUIRED_CONSENT_TEXTS = (
    "child_protection_duty",
    "vital_interest",
    "lacks_capacity",
    "no_consent",
    "outside_scope",
)
#: Needed only by a rule file with a law-enforcement rule (``recipient: law_enforcement``).
LAW_ENFORCEMENT_TEXTS = ("law_enforcement_needs_consent", "minor_law_enforcement")
CONSENT_TEXT_KEYS = (*REQUIRED_CONSENT_TEXTS, *LAW_ENFORCEMENT_TEXTS)


@dataclass(frozen=True)
class RuleFile:
    version: str
    title: str
    definitions: dict[str, Condition]
    consent_policy: ConsentPolicy
    rules: tuple[Rule, ...]


def fields_read(condition: Condition, definitions: dict[str, Condition]) -> list[Field]:
    """Every field a condition reads, through definitions, in first-read order."""
    seen: dict[str, Field] = {}

    def walk(c: Condition) -> None:
        if isinstance(c, Compare):
            seen.setdefault(c.field.path, c.field)
        elif isinstance(c, AllOf | AnyOf):
            for item in c.items:
                walk(item)
        elif isinstance(c, Not):
            walk(c.item)
        else:
            walk(definitions[c.name])

    walk(condition)
    return list(seen.values())


def refs_in(condition: Condition) -> set[str]:
    if isinstance(condition, Ref):
        return {condition.name}
    if isinstance(condition, AllOf | AnyOf):
        return set().union(*(refs_in(i) for i in condition.items)) if condition.items else set()
    if isinstance(condition, Not):
        return refs_in(condition.item)
    return set()


def requires(condition: Condition, name: str) -> bool:
    """True when the condition can only hold if definition ``name`` holds (structurally)."""
    if isinstance(condition, Ref):
        return condition.name == name
    if isinstance(condition, AllOf):
        return any(requires(i, name) for i in condition.items)
    return False
