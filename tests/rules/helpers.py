"""A small valid rule file for tests, and a way to break it in one place."""

from __future__ import annotations

import textwrap

from app.rules import RuleSet, rule_set_from_text

POLICY = """
consent_policy:
  guideline: "test policy"
  child: presumed_minor
  lacks_capacity: lacks_capacity
  texts:
    child_protection_duty: {es: "cpd", en: "cpd"}
    vital_interest: {es: "vi", en: "vi"}
    lacks_capacity: {es: "lc", en: "lc"}
    no_consent: {es: "nc", en: "nc"}
    outside_scope: {es: "os", en: "os"}
"""

DEFINITIONS = """
definitions:
  presumed_minor: {field: subject.age, op: "<", value: 18, if_missing: false}
  lacks_capacity: {field: consent.lacks_capacity, op: "==", value: true}
"""


def rule_file(rules: str, *, version: str = '"t1"', extra: str = "") -> str:
    """A rule file with the test definitions and policy, and ``rules`` (YAML list items)."""
    return (
        f"version: {version}\n"
        + DEFINITIONS
        + POLICY
        + extra
        + "rules:\n"
        + textwrap.indent(textwrap.dedent(rules).strip("\n"), "  ")
        + "\n"
    )


def one_rule(when: str, *, rule_id: str = "r1", head: str = "") -> str:
    head = head or ("service: medical\nurgency: routine\nlegal_basis: consent\n")
    body = (
        f"- id: {rule_id}\n"
        "  description: d\n"
        "  guideline: g\n"
        + textwrap.indent(head, "  ")
        + '  reason: {es: "r", en: "r"}\n'
        + "  when: "
        + when
        + "\n"
    )
    return rule_file(body)


def build(text: str) -> RuleSet:
    return rule_set_from_text(text, source_name="test.yaml")
