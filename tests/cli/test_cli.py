"""The `ruta` command, run as a user runs it (a subprocess against a test database)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import KeyFactory, bearer
from tests.factories import screening

RUTA = str(Path(sys.executable).with_name("ruta"))


def run(
    database_url: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RUTA_")}
    environment.update(
        {
            "RUTA_ENV": "test",
            "RUTA_DATABASE_URL": database_url,
            "RUTA_SECRET_KEY": "test-secret-key-0123456789abcdef-0123456789",
        }
    )
    environment.update(env or {})
    return subprocess.run(
        [RUTA, *args], capture_output=True, text=True, env=environment, timeout=120
    )


def test_help_lists_the_commands(database_url: str) -> None:
    result = run(database_url, "--help")
    assert result.returncode == 0
    for command in ("serve", "migrate", "clients", "erase", "demo"):
        assert command in result.stdout


async def test_clients_create_prints_the_key_last_and_it_works(
    database_url: str, http: httpx.AsyncClient
) -> None:
    result = run(
        database_url,
        "clients",
        "create",
        "--name",
        "tablet 3",
        "--role",
        "clinic",
        "--organisation",
        "Caravana de la Vida",
    )
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("ruta_")
    response = await http.post("/v1/screenings", json=screening(), headers=bearer(key))
    assert response.status_code == 201


def test_clients_create_refuses_bad_input(database_url: str) -> None:
    assert run(database_url, "clients", "create", "--name", "x", "--role", "boss").returncode == 2
    no_org = run(database_url, "clients", "create", "--name", "x", "--role", "clinic")
    assert no_org.returncode == 2
    assert "organisation" in no_org.stderr


def test_production_refuses_default_secrets(database_url: str) -> None:
    result = run(database_url, "migrate", env={"RUTA_ENV": "production"})
    assert result.returncode == 2
    assert "refusing to start" in result.stderr


def test_migrate_is_idempotent(database_url: str) -> None:
    result = run(database_url, "migrate")
    assert result.returncode == 0, result.stderr


async def test_erase(database_url: str, http: httpx.AsyncClient, api_key: KeyFactory) -> None:
    key = await api_key("clinic", "Caravana de la Vida")
    body = screening(subject__name="CANARY-CLI-ERASE")
    assert (await http.post("/v1/screenings", json=body, headers=bearer(key))).status_code == 201
    missing = run(
        database_url,
        "erase",
        "--organisation",
        "Caravana de la Vida",
        "--case-code",
        "NOPE-1",
        "--reason",
        "data_subject_request",
    )
    assert missing.returncode == 1
    result = run(
        database_url,
        "erase",
        "--organisation",
        "Caravana de la Vida",
        "--case-code",
        body["subject"]["case_code"],
        "--reason",
        "data_subject_request",
    )
    assert result.returncode == 0, result.stderr
    assert "1 screening(s)" in result.stdout
    read = await http.get(
        f"/v1/screenings/{body['id']}/personal",
        params={"purpose": "care_coordination"},
        headers=bearer(key),
    )
    assert read.json()["erased"] is True
    assert "CANARY" not in read.text


def test_demo_refuses_outside_development(database_url: str, tmp_path: Path) -> None:
    result = run(database_url, "demo", "--keys-file", str(tmp_path / "k.env"))
    assert result.returncode == 2
    assert not (tmp_path / "k.env").exists()


def test_demo_writes_keys_once(database_url: str, tmp_path: Path) -> None:
    keys = tmp_path / "keys.env"
    env = {"RUTA_ENV": "development"}
    first = run(database_url, "demo", "--keys-file", str(keys), env=env)
    assert first.returncode == 0, first.stderr
    content = keys.read_text()
    assert "RUTA_CLINIC_KEY=ruta_" in content
    assert "RUTA_ADMIN_KEY=ruta_" in content
    assert oct(keys.stat().st_mode & 0o777) == "0o600"
    second = run(database_url, "demo", "--keys-file", str(keys), env=env)
    assert second.returncode == 0
    assert keys.read_text() == content


def test_clients_list_and_revoke(database_url: str) -> None:
    created = run(
        database_url,
        "clients",
        "create",
        "--name",
        "old tablet",
        "--role",
        "clinic",
        "--organisation",
        "Caravana de la Vida",
    )
    key = created.stdout.strip().splitlines()[-1]
    listed = run(database_url, "clients", "list")
    assert listed.returncode == 0
    [line] = [row for row in listed.stdout.splitlines() if "old tablet" in row]
    client_id = line.split("\t")[0]
    assert "active" in line
    assert key not in listed.stdout
    assert run(database_url, "clients", "revoke", client_id).returncode == 0
    assert "revoked" in run(database_url, "clients", "list").stdout
    assert run(database_url, "clients", "revoke", "not-an-id").returncode == 2


def test_deliveries_replay_needs_a_target(database_url: str) -> None:
    assert run(database_url, "deliveries", "replay").returncode == 2
    nothing = run(database_url, "deliveries", "replay", "--all")
    assert nothing.returncode == 0
    assert "replayed 0 of 0" in nothing.stdout


def test_keys_rewrap_with_nothing_to_do(database_url: str) -> None:
    result = run(database_url, "keys", "rewrap")
    assert result.returncode == 0
    assert "re-wrapped 0" in result.stdout
