from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from app.partners.cli import partners_cli
from app.settings import Settings, get_settings


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUTA_ENV", "test")
    monkeypatch.setenv("RUTA_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("RUTA_SECRET_KEY", settings.secret_key.get_secret_value())
    get_settings.cache_clear()


def test_import_then_export_without_secrets(env: None, tmp_path: Path) -> None:
    secret = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVowMTIzNDU="
    source = tmp_path / "dir.yaml"
    source.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "partners": [
                    {
                        "id": "legal-aid",
                        "organisation": {"id": "legal-aid", "name": "Legal Aid"},
                        "name": "Legal aid (test)",
                        "role": "legal_aid",
                        "services": ["legal"],
                        "service_area": {"national": True},
                        "languages": ["es"],
                        "capacity": {"available": 1, "maximum": 2},
                        "endpoint": {"url": "https://legal.example.org/x", "secrets": [secret]},
                    }
                ],
            }
        )
    )
    runner = CliRunner()
    result = runner.invoke(partners_cli, ["import", str(source)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out.yaml"
    result = runner.invoke(partners_cli, ["export", "--output", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "legal-aid" in text
    assert "whsec_" not in text
    assert "secrets" not in text
    get_settings.cache_clear()


def test_import_reports_partner_and_path(env: None, tmp_path: Path) -> None:
    source = tmp_path / "bad.yaml"
    source.write_text("version: 1\npartners:\n  - id: bad\n    services: [medicine]\n")
    result = CliRunner().invoke(partners_cli, ["import", str(source)])
    assert result.exit_code == 2
    assert "partners[0] (id=bad): services.0" in result.output
    get_settings.cache_clear()


def test_import_a_spreadsheet(env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``ruta partners import partners.csv``: the rows become partners, the same way a YAML
    file's entries do; a bad row names its row and column, and changes nothing."""
    from tests.partners.test_directory_csv import ROWS, SECRET, write_csv

    monkeypatch.setenv("CASA_SECRET", SECRET)
    runner = CliRunner()
    bad = write_csv(tmp_path / "bad.csv", [ROWS[0], {**ROWS[1], "role": "", "services": "x"}])
    result = runner.invoke(partners_cli, ["import", str(bad)])
    assert result.exit_code == 2
    assert "row 3 (id=demuna-x), column role: Field required" in result.output
    assert "row 3 (id=demuna-x), column services:" in result.output
    good = write_csv(tmp_path / "partners.csv", ROWS)
    result = runner.invoke(partners_cli, ["import", str(good)])
    assert result.exit_code == 0, result.output
    assert "created 2" in result.output
    out = tmp_path / "out.yaml"
    assert runner.invoke(partners_cli, ["export", "--output", str(out)]).exit_code == 0
    exported = {p["id"]: p for p in yaml.safe_load(out.read_text())["partners"]}
    assert set(exported) == {"casa-esperanza", "demuna-x"}
    assert exported["demuna-x"]["role"] == "child_protection_authority"
    assert exported["casa-esperanza"]["hours"]["schedule"][1]["days"] == ["sat"]
    get_settings.cache_clear()
