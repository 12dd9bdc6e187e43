from __future__ import annotations

import csv
import io

from app.rules import load_rule_set
from app.rules.table import condition_text, rows, to_csv, to_html
from tests.rules.helpers import build, one_rule

RULE_SET = load_rule_set()


def test_rows_are_rules_and_columns_are_fields() -> None:
    columns, table = rows(RULE_SET.rule_file)
    ids = [row["id"] for row in table]
    assert ids[: len(RULE_SET.rule_file.definitions)] == list(RULE_SET.rule_file.definitions)
    assert ids[len(RULE_SET.rule_file.definitions) :] == [c.rule.id for c in RULE_SET.rules]
    assert "subject.age" in columns
    assert "presumed_minor" in columns
    minor = next(r for r in table if r["id"] == "minor-protection")
    assert minor["presumed_minor"] == "holds"
    assert minor["legal_basis"] == "child_protection_duty"
    definition = next(r for r in table if r["id"] == "presumed_minor")
    assert "< 18 (if unknown: no)" in definition["subject.age"]


def test_csv_round_trips() -> None:
    parsed = list(csv.DictReader(io.StringIO(to_csv(RULE_SET.rule_file))))
    assert len(parsed) == len(RULE_SET.rules) + len(RULE_SET.rule_file.definitions)


def test_html_is_escaped_and_csv_neutralises_formulas() -> None:
    rule_set = build(
        one_rule(
            '{field: source.site, op: "==", value: "<script>x</script>", if_missing: false}'
        ).replace("guideline: g", 'guideline: "=HYPERLINK(1)"')
    )
    page = to_html(rule_set.rule_file, sha256=rule_set.sha256)
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert "'=HYPERLINK(1)" in to_csv(rule_set.rule_file)


def test_condition_text_keeps_structure() -> None:
    rule = next(c.rule for c in RULE_SET.rules if c.rule.id == "child-without-guardian")
    text = condition_text(rule.when)
    assert text.startswith("(presumed_minor AND (")
    assert " OR " in text
