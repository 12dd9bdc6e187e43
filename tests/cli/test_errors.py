"""The `ruta` command's errors are one line (no traceback, no pydantic dump) with a non-zero
exit; `--version`; `--json` for the listings a person pipes; and the development settings
that `make run` writes reach the commands the README shows."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.cli.test_cli import RUTA, run

ROOT = Path(__file__).resolve().parents[2]


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single line a failed command printed on stderr."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("error: "), lines
    return lines[0]


def test_version(database_url: str) -> None:
    from importlib.metadata import version

    result = run(database_url, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"ruta {version('ruta')}"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_replay_of_something_not_a_uuid_is_one_line(database_url: str) -> None:
    result = run(database_url, "deliveries", "replay", "not-a-uuid")
    assert result.returncode == 2
    assert "not a delivery id" in one_line_error(result)


def test_replay_of_an_unknown_delivery_says_so_and_fails(database_url: str) -> None:
    result = run(database_url, "deliveries", "replay", str(uuid.uuid4()))
    assert result.returncode == 1
    assert one_line_error(result) == "error: no delivery with this id"
    assert "replayed" not in result.stdout


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_migrate_to_an_unknown_revision_is_one_line(database_url: str) -> None:
    result = run(database_url, "migrate", "bogusrev")
    assert result.returncode == 2
    assert "bogusrev" in one_line_error(result)


def test_an_unreachable_database_is_one_line_without_the_url(free_port: int) -> None:
    url = f"postgresql://ruta:CANARY-PASSWORD@127.0.0.1:{free_port}/ruta"
    result = run(url, "clients", "list")
    assert result.returncode == 1
    line = one_line_error(result)
    assert "database could not be reached" in line
    assert "CANARY" not in result.stderr + result.stdout


@pytest.fixture
def free_port() -> int:
    from tests.cli.test_commands import free_port as pick

    return pick()


def test_clients_list_json(database_url: str) -> None:
    created = run(
        database_url, "clients", "create", "--name", "tablet json", "--role", "clinic",
        "--organisation", "Caravana de la Vida",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    listed = run(database_url, "clients", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [client] = [c for c in json.loads(listed.stdout) if c["name"] == "tablet json"]
    assert client["role"] == "clinic"
    assert client["organisation"] == "Caravana de la Vida"
    assert client["state"] == "active"
    assert client["key_id"] == key.split("_")[1]
    assert client["previous_key_id"] is None
    assert key not in listed.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_the_readme_s_clients_create_works_after_make_run(tmp_path: Path) -> None:
    """`make run` writes .env (RUTA_ENV=development), and the settings read it: the README's
    `ruta clients create` then works in that directory with nothing else set. Before, it
    exited 2 with a pydantic error (production mode, default secrets)."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    made = subprocess.run(
        ["make", "--no-print-directory", ".env"], cwd=tmp_path, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    dotenv = (tmp_path / ".env").read_text()
    settings = [line for line in dotenv.splitlines() if line and not line.startswith("#")]
    assert settings == ["RUTA_ENV=development"]  # nothing secret
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RUTA_")}

    def ruta(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [RUTA, *args], cwd=tmp_path, env=environment, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip

    assert ruta("migrate").returncode == 0
    created = ruta(
        "clients", "create", "--name", "Caravana tablet 3", "--role", "clinic",
        "--organisation", "Caravana de la Vida",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip().splitlines()[-1].startswith("ruta_")
    # And the file is never committed.
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", ".env"], cwd=ROOT, capture_output=True, timeout=30
    )
    assert ignored.returncode == 0
