"""Admin changes leave a trace in the logs: the directory's partners (through the API), API
clients (through the CLI), and the rule set's load at start. One JSON line each, with ids
and codes, never a secret, a key or a client's name (which may be a person's)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from app.main import create_app
from app.observability import configure_logging
from app.settings import Settings
from tests.cli.conftest import Ruta
from tests.conftest import KeyFactory, bearer, log_lines, log_records
from tests.delivery.conftest import add_partner


async def test_admin_changes_leave_a_trace_without_secrets(
    settings: Settings,
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    ruta: Ruta,
    capfd: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO")
    restarted = create_app(settings)  # the rule set's load, at start
    async with restarted.router.lifespan_context(restarted):
        pass
    admin_key = await api_key("admin")
    admin = bearer(admin_key)
    await add_partner(http, api_key, "trace-partner", "http://127.0.0.1:9/inbox")
    patched = await http.patch(
        "/v1/partners/trace-partner", json={"languages": ["es"]}, headers=admin
    )
    assert patched.status_code == 200, patched.text
    assert (await http.post("/v1/partners/trace-partner/pause", headers=admin)).status_code == 200
    rotated = await http.post("/v1/partners/trace-partner/secrets/rotate", headers=admin)
    assert rotated.status_code == 200, rotated.text
    secret = rotated.json()["secret"]
    created = await asyncio.to_thread(
        ruta, "clients", "create", "--name", "Canaria Quispe Mamani", "--role", "auditor"
    )
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[-1]
    client_id = created.stderr.split(" client ")[1].split()[0]
    rotation = await asyncio.to_thread(ruta, "clients", "rotate", client_id, "--grace", "1h")
    assert rotation.exit_code == 0, rotation.output
    new_key = rotation.stdout.strip()
    assert (await asyncio.to_thread(ruta, "clients", "revoke", client_id)).exit_code == 0

    output = capfd.readouterr()
    # In-process commands write to the runner's stderr; the service's lines to the real one.
    text = output.out + output.err + created.stderr + rotation.stderr
    found = log_records(output.err)
    [loaded] = log_lines(found, "rule_set_loaded")
    assert loaded["rule_set_hash"] == restarted.state.rule_set.sha256
    changes = log_lines(found, "partner_changed", partner_id="trace-partner")
    assert [c["action"] for c in changes] == [
        "admin.partner_created",
        "admin.partner_updated",
        "admin.partner_disabled",
        "admin.partner_updated",
    ]
    assert changes[1]["changed"] == ["languages"]
    assert changes[3]["changed"] == ["secrets"]
    assert all(c["actor_role"] == "admin" for c in changes)
    [made] = log_lines(log_records(created.stderr), "api_client_created", client_id=client_id)
    assert (made["role"], made["actor"], made["actor_id"]) == ("auditor", "system", "cli")
    rotations = log_records(rotation.stderr)
    [turned] = log_lines(rotations, "api_client_key_rotated", client_id=client_id)
    assert turned["previous_key_id"] == made["key_id"]
    assert turned["previous_key_valid_until"]
    assert log_lines(found, "api_client_created", role="admin")  # the API key fixture's
    for secret_value in (secret, key, new_key, admin_key):
        assert secret_value not in text
    log_text = "\n".join(line for line in text.splitlines() if line.startswith("{"))
    assert "Canaria" not in log_text  # a client's name can be a person's
