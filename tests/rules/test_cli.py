from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from app.rules import DEFAULT_RULES_PATH
from app.rules.cli import rules_cli
from tests.rules.helpers import one_rule

runner = CliRunner()


def test_validate_ok() -> None:
    result = runner.invoke(rules_cli, ["validate", str(DEFAULT_RULES_PATH)])
    assert result.exit_code == 0, result.output
    assert "valid - version" in result.output


def test_validate_reports_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(one_rule('{field: subject.agee, op: "<", value: 18, if_missing: false}'))
    result = runner.invoke(rules_cli, ["validate", str(path)])
    assert result.exit_code == 1
    assert "did you mean 'subject.age'" in result.output
    assert "rule 'r1'" in result.output


def test_test_runs_scenarios_and_coverage() -> None:
    result = runner.invoke(rules_cli, ["test"])
    assert result.exit_code == 0, result.output
    assert "0 failed" in result.output
    assert "coverage: all" in result.output


def test_test_fails_on_a_changed_rule(tmp_path: Path) -> None:
    changed = tmp_path / "protocol.yaml"
    changed.write_text(
        DEFAULT_RULES_PATH.read_text().replace("value: 72, if_missing", "value: 48, if_missing")
    )
    result = runner.invoke(
        rules_cli,
        ["test", str(changed), "--scenarios", str(DEFAULT_RULES_PATH.parent / "scenarios")],
    )
    assert result.exit_code == 1
    assert "FAIL medical.yaml::sexual-violence-exactly-72h" in result.output


def test_table_csv_and_html(tmp_path: Path) -> None:
    result = runner.invoke(rules_cli, ["table", "--format", "csv"])
    assert result.exit_code == 0
    assert result.output.startswith("kind,id,protocol,service,recipient")
    assert "docs/protocol.md#10" in result.output  # rules cite the project's protocol
    out = tmp_path / "t.html"
    result = runner.invoke(rules_cli, ["table", "--format", "html", "--output", str(out)])
    assert result.exit_code == 0
    assert out.read_text().startswith("<!doctype html>")
    assert runner.invoke(rules_cli, ["table", "--format", "pdf"]).exit_code == 2


def test_table_json_is_one_document_of_rows() -> None:
    result = runner.invoke(rules_cli, ["table", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["sha256"]
    assert document["version"]
    assert document["columns"][:2] == ["kind", "id"]
    rules = {row["id"]: row for row in document["rows"] if row["kind"] == "rule"}
    assert rules, document["rows"][:2]
    assert all(set(row) == set(document["columns"]) for row in document["rows"])
    assert any("docs/protocol.md#10" in row["protocol"] for row in rules.values())


def test_diff_json(tmp_path: Path) -> None:
    result = runner.invoke(
        rules_cli,
        [
            "diff",
            str(DEFAULT_RULES_PATH),
            str(DEFAULT_RULES_PATH),
            "--corpus",
            "generated:500",
            "--json",
            "--no-progress",
            "--workers",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["summary"]["screenings"] == 500
    assert data["summary"]["changed_screenings"] == 0


def test_diff_text_and_bad_corpus(tmp_path: Path) -> None:
    result = runner.invoke(
        rules_cli,
        [
            "diff",
            str(DEFAULT_RULES_PATH),
            str(DEFAULT_RULES_PATH),
            "--corpus",
            "generated:200",
            "--no-progress",
            "--workers",
            "1",
        ],
    )
    assert result.exit_code == 0
    assert "200 screenings, 0 with changed referrals" in result.output
    result = runner.invoke(
        rules_cli,
        [
            "diff",
            str(DEFAULT_RULES_PATH),
            str(DEFAULT_RULES_PATH),
            "--corpus",
            str(tmp_path / "missing.jsonl"),
            "--no-progress",
        ],
    )
    assert result.exit_code == 2
