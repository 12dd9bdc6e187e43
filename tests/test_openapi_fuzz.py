"""schemathesis against the running service's OpenAPI document: every check, every phase
(examples, coverage, fuzzing, stateful), authenticated, once per role.

The service runs as a real uvicorn process on loopback against the test's database."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

#: Which operations each role's run exercises ("METHOD /path" regex), with its key's
#: organisation. Every /v1 operation is in one role's run.
ROLE_TAGS: dict[str, tuple[str | None, str]] = {
    "clinic": (
        "Caravana de la Vida",
        r"^(POST /v1/screenings|GET /v1/screenings/\{screening_id\}(/personal)?$"
        r"|POST /v1/screenings/\{screening_id\}/consent/withdraw|GET /(healthz|readyz|metrics)$)",
    ),
    "partner": (
        "Caravana de la Vida",
        r"^(POST /v1/referrals/\{referral_id\}/status|GET /v1/referrals/\{referral_id\}/details"
        r"|PATCH /v1/partners/me/capacity)",
    ),
    "auditor": (
        None,
        r"^(GET /v1/audit/|GET /v1/referrals$|GET /v1/referrals/\{referral_id\}$"
        r"|GET /v1/screenings/\{screening_id\}/disclosures|GET /v1/rules$)",
    ),
    "admin": (None, r"^(GET|POST|PATCH) /v1/(partners(?!/me/)|rules|deliveries|erasures)"),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(database_url: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUTA_")}
    env.update(
        {
            "RUTA_ENV": "test",
            "RUTA_DATABASE_URL": database_url,
            "RUTA_SECRET_KEY": "fuzz-secret-key-0123456789abcdef-0123456789",
            "RUTA_RATE_LIMIT_BACKEND": "off",
            "RUTA_LOG_LEVEL": "WARNING",
            "RUTA_HOST": "127.0.0.1",
            "RUTA_PORT": str(port),
        }
    )
    return env


@pytest.fixture
def service(database_url: str, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    port = _free_port()
    env = _env(database_url, port)
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen([str(BIN / "ruta"), "serve"], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/healthz", timeout=1)  # noqa: S310 - loopback
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError((tmp_path / "server.log").read_text()) from None
                time.sleep(0.2)
        yield url, env
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()


def _key(env: dict[str, str], role: str, organisation: str | None) -> str:
    cmd = [str(BIN / "ruta"), "clients", "create", "--name", f"fuzz-{role}", "--role", role]
    if organisation:
        cmd += ["--organisation", organisation]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1]


@pytest.mark.slow
@pytest.mark.parametrize("role", sorted(ROLE_TAGS))
def test_schemathesis_finds_no_failures(
    role: str, service: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    url, env = service
    organisation, pattern = ROLE_TAGS[role]
    key = _key(env, role, organisation)
    st = shutil.which("schemathesis", path=str(BIN))
    assert st is not None, "schemathesis is a dev dependency"
    cmd = [
        st,
        "--config-file",
        str(ROOT / "schemathesis.toml"),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "-H",
        f"Authorization: Bearer {key}",
        "--seed",
        "20261123",
        "--no-color",
    ]
    cmd += ["--include-name-regex", pattern]
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "NO_COLOR": "1"}
    )
    summary = result.stdout[-6000:]
    assert result.returncode == 0, summary
    assert "Tested:" in summary
