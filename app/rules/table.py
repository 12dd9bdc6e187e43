"""The decision-table view of a rule file, for people who do not program.

Rows are rules (definitions first), columns are the named conditions and the screening
fields the file reads; a cell shows what the rule asks of that column. A cell reads
"any of" when the comparison is one alternative among others, "not" when it is negated.
The ``condition`` column keeps the full structure.
"""

from __future__ import annotations

import csv
import html
import io
from enum import Enum
from typing import Any

from app.rules.symbols import SYMBOLS
from app.rules.syntax import AllOf, AnyOf, Compare, Condition, Not, Ref, RuleFile

_OP_TEXT = {
    "==": "=",
    "!=": "≠",
    "<": "<",
    "<=": "≤",
    ">": ">",
    ">=": "≥",
    "in": "one of",
    "not_in": "none of",
    "contains": "includes",
    "not_contains": "does not include",
    "contains_any": "includes any of",
    "contains_none": "includes none of",
    "is_missing": "is unknown",
    "is_known": "is known",
    "is_empty": "is empty",
    "is_not_empty": "is not empty",
}
_UNARY = ("is_missing", "is_known", "is_empty", "is_not_empty")


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, frozenset):
        return ", ".join(sorted(_value(v) for v in value))
    return str(value)


def compare_text(c: Compare, *, with_field: bool = False) -> str:
    text = _OP_TEXT[c.op]
    if c.op not in _UNARY:
        text += f" {_value(c.value)}"
    if c.if_missing is not None:
        text += f" (if unknown: {'yes' if c.if_missing else 'no'})"
    return f"{c.field.path} {text}" if with_field else text


def condition_text(c: Condition) -> str:
    if isinstance(c, Compare):
        return compare_text(c, with_field=True)
    if isinstance(c, Ref):
        return c.name
    if isinstance(c, Not):
        return f"NOT ({condition_text(c.item)})"
    joiner = " AND " if isinstance(c, AllOf) else " OR "
    return "(" + joiner.join(condition_text(i) for i in c.items) + ")"


def _cells(c: Condition, context: str, out: dict[str, list[str]]) -> None:
    if isinstance(c, Compare):
        out.setdefault(c.field.path, []).append(context + compare_text(c))
    elif isinstance(c, Ref):
        out.setdefault(c.name, []).append(context + "holds")
    elif isinstance(c, Not):
        _cells(c.item, "not: " + context, out)
    elif isinstance(c, AnyOf):
        for item in c.items:
            alternative = len(c.items) > 1 and not context.startswith("any of: ")
            _cells(item, "any of: " + context if alternative else context, out)
    else:
        for item in c.items:
            _cells(item, context, out)


FIXED = ("kind", "id", "protocol", "service", "recipient", "urgency", "legal_basis", "flags")
TRAILING = ("condition", "guideline", "reason_es", "reason_en")


def rows(rule_file: RuleFile) -> tuple[list[str], list[dict[str, str]]]:
    """The table as column names and rows of text cells."""
    field_columns: list[str] = []
    for c in [*rule_file.definitions.values(), *(r.when for r in rule_file.rules)]:
        for f in _direct_fields(c):
            if f not in field_columns:
                field_columns.append(f)
    columns = [*FIXED, *rule_file.definitions, *sorted(field_columns), *TRAILING]
    table: list[dict[str, str]] = []
    for name, body in rule_file.definitions.items():
        cells: dict[str, list[str]] = {}
        _cells(body, "", cells)
        row = {k: "" for k in columns}
        row.update({"kind": "definition", "id": name, "condition": condition_text(body)})
        row.update({k: "; ".join(v) for k, v in cells.items()})
        table.append(row)
    for rule in rule_file.rules:
        cells = {}
        _cells(rule.when, "", cells)
        row = {k: "" for k in columns}
        row.update(
            {
                "kind": "rule" if rule.service else "flags",
                "id": rule.id,
                "protocol": ", ".join(f"docs/protocol.md#{n}" for n in rule.protocol),
                "service": rule.service.value if rule.service else "(every referral)",
                "recipient": rule.recipient.value if rule.service else "",
                "urgency": rule.urgency.value if rule.urgency else "",
                "legal_basis": rule.legal_basis.value if rule.legal_basis else "",
                "flags": ", ".join(sorted(f.value for f in rule.flags)),
                "condition": condition_text(rule.when),
                "guideline": rule.guideline,
                "reason_es": rule.reason.get("es", ""),
                "reason_en": rule.reason.get("en", ""),
            }
        )
        row.update({k: "; ".join(v) for k, v in cells.items()})
        table.append(row)
    return columns, table


def _direct_fields(c: Condition) -> list[str]:
    out: dict[str, list[str]] = {}
    _cells(c, "", out)
    return [k for k in out if k in SYMBOLS]


def to_csv(rule_file: RuleFile) -> str:
    columns, table = rows(rule_file)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in table:
        # A cell starting with = + - @ would run as a formula in a spreadsheet.
        writer.writerow(
            {k: ("'" + v if v[:1] in ("=", "+", "-", "@") else v) for k, v in row.items()}
        )
    return buffer.getvalue()


def to_html(rule_file: RuleFile, *, sha256: str = "") -> str:
    columns, table = rows(rule_file)
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in columns)
    body = "\n".join(
        f'<tr class="{e(row["kind"])}">'
        + "".join(f"<td>{e(row[c])}</td>" for c in columns)
        + "</tr>"
        for row in table
    )
    title = e(f"{rule_file.title or 'Rule set'} — version {rule_file.version}")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; font-size: 13px; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #999; padding: 3px 5px; vertical-align: top; }}
th {{ background: #eee; position: sticky; top: 0; }}
tr.definition {{ background: #f6f6ff; }}
tr.flags {{ background: #f6fff6; }}
</style></head><body>
<h1>{title}</h1>
<p>sha256: <code>{e(sha256)}</code></p>
<table>
<thead><tr>{head}</tr></thead>
<tbody>
{body}
</tbody>
</table>
</body></html>
"""
