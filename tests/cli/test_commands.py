"""Every `ruta` command has a test of its real behaviour; this file holds the ones the other
CLI test files do not (serve, worker, migrate on an empty database, replay of a real dead
letter, KEK re-wrap), and a check that no command is left without a test."""

from __future__ import annotations

import asyncio
import base64
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import select, update

from app.cli import cli
from app.models import AuditEvent, Delivery, Referral
from app.models.base import utcnow
from app.settings import Settings
from tests.cli.conftest import Ruta
from tests.conftest import TEST_SECRET, KeyFactory, bearer
from tests.delivery.conftest import add_partner, submit
from tests.factories import screening

RUTA = str(Path(sys.executable).with_name("ruta"))
STOP_WITHIN = 20.0

#: Every command, and the test that exercises it. A new command fails
#: ``test_every_command_has_a_test`` until it is added here with its test.
TESTED: dict[str, str] = {
    "migrate": "tests.cli.test_commands:test_migrate_builds_an_empty_database_to_head",
    "serve": "tests.cli.test_commands:test_serve_answers_readyz_and_stops_on_sigterm",
    "worker": "tests.cli.test_commands:test_worker_starts_and_stops_on_sigterm",
    "clients create": "tests.cli.test_cli:test_clients_create_prints_the_key_last_and_it_works",
    "clients list": "tests.cli.test_cli:test_clients_list_and_revoke",
    "clients revoke": "tests.cli.test_commands:test_revoke_ends_the_key_and_refuses_unknown_ids",
    "clients rotate": "tests.cli.test_clients:test_rotate_without_grace_old_key_stops_at_once",
    "erase": "tests.cli.test_cli:test_erase",
    "deliveries replay": "tests.cli.test_commands:test_deliveries_replay_requeues_a_dead_letter",
    "keys rewrap": "tests.cli.test_commands:test_keys_rewrap_moves_data_keys_to_the_new_kek",
    "db grant": "tests.test_migrations_roles:test_db_grant_and_its_refusals",
    "demo": "tests.cli.test_cli:test_demo_writes_keys_once",
    "audit verify": "tests.audit.test_cli:test_export_keep_checkpoints_and_verify_offline",
    "audit export": "tests.audit.test_cli:test_export_keep_checkpoints_and_verify_offline",
    "audit checkpoints": "tests.audit.test_cli:test_export_keep_checkpoints_and_verify_offline",
    "audit public-key": "tests.audit.test_cli:test_export_keep_checkpoints_and_verify_offline",
    "audit prove inclusion": "tests.audit.test_proofs:test_inclusion_proofs_of_a_case",
    "audit prove consistency": "tests.audit.test_proofs:test_consistency_from_a_kept_checkpoint",
    "rules validate": "tests.rules.test_cli:test_validate_reports_every_problem",
    "rules test": "tests.rules.test_cli:test_test_fails_on_a_changed_rule",
    "rules table": "tests.rules.test_cli:test_table_csv_and_html",
    "rules diff": "tests.rules.test_cli:test_diff_json",
    "partners import": "tests.partners.test_cli:test_import_then_export_without_secrets",
    "partners export": "tests.partners.test_cli:test_import_then_export_without_secrets",
}


def commands(group: Any, prefix: str = "") -> list[str]:
    """Every leaf command under a (Typer) group, as "group sub"."""
    found: list[str] = []
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        if hasattr(command, "commands"):
            found.extend(commands(command, f"{path} "))
        else:
            found.append(path)
    return found


def test_every_command_has_a_test() -> None:
    listed = commands(typer.main.get_command(cli))
    assert "clients rotate" in listed
    assert sorted(listed) == sorted(TESTED), "add the new command and its test to TESTED"
    for command, target in TESTED.items():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function, None)), command


def environment(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUTA_")}
    env.update(
        {"RUTA_ENV": "test", "RUTA_DATABASE_URL": database_url, "RUTA_SECRET_KEY": TEST_SECRET}
    )
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop(process: subprocess.Popen[bytes]) -> float:
    """SIGTERM, and how long the process took to exit (it must, within STOP_WITHIN)."""
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_WITHIN)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(f"did not stop within {STOP_WITHIN}s of SIGTERM")
    return time.monotonic() - started


def test_serve_answers_readyz_and_stops_on_sigterm(database_url: str, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [RUTA, "serve", "--host", "127.0.0.1", "--port", str(port), "--migrate"],
            env=environment(database_url),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        ready: httpx.Response | None = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        assert ready is not None, log.read_text()
        assert ready.status_code == 200, log.read_text()
        assert ready.json()["status"] == "ready"
        assert ready.headers["x-request-id"]
        # A real request through the whole stack: authentication is enforced.
        denied = httpx.get(f"http://127.0.0.1:{port}/v1/rules", timeout=5)
        assert denied.status_code == 401
        assert denied.headers["content-type"].startswith("application/problem+json")
    finally:
        if process.poll() is None:
            stop(process)
    # uvicorn shuts down gracefully, then re-raises the signal it caught so the exit status
    # tells a supervisor why it stopped.
    assert process.returncode in (0, -signal.SIGTERM), log.read_text()
    assert "Application shutdown complete" in log.read_text()
    assert "Finished server process" in log.read_text()
    assert '"event": "request"' in log.read_text()


def test_worker_starts_and_stops_on_sigterm(database_url: str, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [RUTA, "worker", "--concurrency", "2"],
            env=environment(database_url, RUTA_WORKER_POLL_SECONDS="0.1"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while "started" not in log.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            time.sleep(0.1)
        time.sleep(0.5)  # a few idle polls
        assert process.poll() is None, log.read_text()
    finally:
        if process.poll() is None:
            stop(process)
    assert process.returncode == 0, log.read_text()
    # Every line it wrote is a JSON log line.
    events = [json.loads(line)["event"] for line in log.read_text().splitlines() if line]
    assert events[0] == "delivery_worker_started"
    assert events[-1] == "delivery_worker_stopped"


def test_migrate_builds_an_empty_database_to_head(ruta: Ruta, tmp_path: Path) -> None:
    empty = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    from app.migrations import head_revision

    result = subprocess.run(
        [RUTA, "migrate"], env=environment(empty), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "database at head"
    import sqlite3

    with sqlite3.connect(tmp_path / "empty.db") as conn:
        [(revision,)] = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert revision == head_revision()
    assert {"api_clients", "screenings", "referrals", "audit_events"} <= tables
    # And on the test's own database (SQLite or PostgreSQL) it is a no-op that succeeds.
    assert ruta("migrate").exit_code == 0


def test_revoke_ends_the_key_and_refuses_unknown_ids(ruta: Ruta) -> None:
    created = ruta("clients", "create", "--name", "old", "--role", "admin")
    client_id = created.stderr.split(" client ")[1].split()[0]
    revoked = ruta("clients", "revoke", client_id)
    assert revoked.exit_code == 0
    assert revoked.stdout.strip() == f"revoked {client_id}"
    assert ruta("clients", "revoke", client_id).exit_code == 0  # idempotent
    unknown = ruta("clients", "revoke", str(uuid.uuid4()))
    assert unknown.exit_code == 1
    assert "no such client" in unknown.stderr
    assert ruta("clients", "revoke", "not-an-id").exit_code == 2


async def test_revoked_key_is_refused(ruta: Ruta, http: httpx.AsyncClient) -> None:
    created = await asyncio.to_thread(ruta, "clients", "create", "--name", "a", "--role", "auditor")
    key = created.stdout.strip().splitlines()[-1]
    assert (await http.get("/v1/rules", headers=bearer(key))).status_code == 200
    client_id = created.stderr.split(" client ")[1].split()[0]
    assert (await asyncio.to_thread(ruta, "clients", "revoke", client_id)).exit_code == 0
    assert (await http.get("/v1/rules", headers=bearer(key))).status_code == 401


async def test_deliveries_replay_requeues_a_dead_letter(
    ruta: Ruta, app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    await add_partner(http, api_key, "hospital-cli", "https://hospital-cli.example.org/ruta")
    await submit(http, api_key)
    maker = app.state.sessionmaker
    async with maker() as session:
        delivery = (await session.execute(select(Delivery))).scalars().first()
        assert delivery is not None
        delivery_id, referral_id = delivery.id, delivery.referral_id
        await session.execute(
            update(Delivery)
            .where(Delivery.id == delivery_id)
            .values(status="dead", finished_at=utcnow(), attempt_count=14, needs_human=True)
        )
        await session.execute(
            update(Referral)
            .where(Referral.id == referral_id)
            .values(status="undeliverable", needs_human=True)
        )
        await session.commit()

    result = await asyncio.to_thread(ruta, "deliveries", "replay", str(delivery_id))
    assert result.exit_code == 0, result.output
    assert "replayed 1 of 1" in result.stdout
    async with maker() as session:
        replayed = await session.get(Delivery, delivery_id)
        requeued = await session.get(Referral, referral_id)
        events = (
            (
                await session.execute(
                    select(AuditEvent).where(AuditEvent.action == "admin.dead_letter_replayed")
                )
            )
            .scalars()
            .all()
        )
    assert replayed is not None
    assert (replayed.status, replayed.replays, replayed.attempt_count) == ("pending", 1, 0)
    assert requeued is not None
    assert (requeued.status, requeued.needs_human) == ("queued", False)
    assert [e.data["delivery_id"] for e in events] == [str(delivery_id)]
    # Not a dead letter any more: nothing to replay, and --all finds none.
    again = await asyncio.to_thread(ruta, "deliveries", "replay", str(delivery_id))
    assert "replayed 0 of 1" in again.stdout
    assert (
        "replayed 0 of 0" in (await asyncio.to_thread(ruta, "deliveries", "replay", "--all")).stdout
    )


async def test_keys_rewrap_moves_data_keys_to_the_new_kek(
    ruta: Ruta,
    app: FastAPI,
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = await api_key("clinic", "Caravana de la Vida")
    body = screening(subject__name="CANARY-CLI-REWRAP")
    assert (await http.post("/v1/screenings", json=body, headers=bearer(key))).status_code == 201

    old = base64.b64encode(settings.kek_bytes()).decode()
    new = base64.b64encode(os.urandom(32)).decode()
    monkeypatch.setenv("RUTA_ENCRYPTION_KEK", new)
    monkeypatch.setenv("RUTA_ENCRYPTION_KEK_PREVIOUS", old)
    first = await asyncio.to_thread(ruta, "keys", "rewrap")
    assert first.exit_code == 0, first.output
    assert "re-wrapped 1 data key(s)" in first.stdout
    second = await asyncio.to_thread(ruta, "keys", "rewrap")
    assert "re-wrapped 0 data key(s)" in second.stdout

    # The new KEK alone now reads the personal fields.
    app.state.settings = settings.model_copy(
        update={"encryption_kek": SecretStr(new), "encryption_kek_previous": None}
    )
    read = await http.get(
        f"/v1/screenings/{body['id']}/personal",
        params={"purpose": "care_coordination"},
        headers=bearer(key),
    )
    assert read.status_code == 200, read.text
    assert read.json()["personal"]["subject.name"] == "CANARY-CLI-REWRAP"
