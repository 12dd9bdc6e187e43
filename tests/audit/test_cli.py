"""``ruta audit``: export, keep checkpoints, verify offline with only the public key."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.audit.cli import audit_cli
from app.settings import Settings, get_settings
from tests.audit.conftest import seed, use_cli


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    yield use_cli(settings, monkeypatch, checkpoint_every=10)
    get_settings.cache_clear()


def _seed(settings: Settings, count: int) -> None:
    seed(settings, count, per_transaction=7)


def test_export_keep_checkpoints_and_verify_offline(cli_env: Settings, tmp_path: Path) -> None:
    runner = CliRunner()
    _seed(cli_env, 33)

    key = runner.invoke(audit_cli, ["public-key"])
    assert key.exit_code == 0, key.output
    key_file = tmp_path / "ruta-audit.pub"
    key_file.write_text(key.stdout.strip().splitlines()[-1])

    kept = tmp_path / "kept-checkpoints.ndjson"
    result = runner.invoke(audit_cli, ["checkpoints", "--output", str(kept)])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["seq"] for line in kept.read_text().splitlines()] == [14, 21, 33]

    online = runner.invoke(audit_cli, ["verify", "--checkpoints", str(kept)])
    assert online.exit_code == 0, online.output

    for fmt in ("ndjson", "csv"):
        out = tmp_path / f"export.{fmt}"
        result = runner.invoke(audit_cli, ["export", "--format", fmt, "--output", str(out)])
        assert result.exit_code == 0, result.output
        offline = runner.invoke(
            audit_cli,
            ["verify", str(out), "--public-key", str(key_file), "--checkpoints", str(kept)],
        )
        assert offline.exit_code == 0, offline.output
        assert '"ok": true' in offline.stdout

    # Tamper with one event in the NDJSON file: the offline verifier names its seq.
    ndjson = tmp_path / "export.ndjson"
    lines = ndjson.read_text().splitlines()
    event = json.loads(lines[12])
    assert event["seq"] == 12
    event["actor"]["role"] = "admin"
    lines[12] = json.dumps(event)
    ndjson.write_text("\n".join(lines) + "\n")
    bad = runner.invoke(audit_cli, ["verify", str(ndjson), "--public-key", str(key_file)])
    assert bad.exit_code == 1
    assert json.loads(bad.stdout)["first_bad_seq"] == 12

    # Offline without a key is refused rather than trusting the file's own header.
    assert runner.invoke(audit_cli, ["verify", str(ndjson)]).exit_code == 2
