"""`ruta serve` and `ruta worker` as real processes: every line they write is JSON, no
database value reaches a log line, and forwarded headers count only from trusted proxies.

Each test starts the process on a free loopback port, talks to it with a bounded number of
requests, and stops it (SIGTERM, then SIGKILL after a deadline).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cli.test_commands import RUTA, environment, free_port, stop
from tests.conftest import KeyFactory, bearer
from tests.factories import screening

START_SECONDS = 30


@dataclass
class Process:
    popen: subprocess.Popen[bytes]
    out: Path
    err: Path
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def lines(self) -> list[str]:
        text = self.out.read_text(errors="replace") + self.err.read_text(errors="replace")
        return [line for line in text.splitlines() if line.strip()]

    def records(self) -> list[dict[str, Any]]:
        """Every line, parsed: a line that is not a JSON object fails the test."""
        parsed = []
        for line in self.lines():
            try:
                record = json.loads(line)
            except ValueError:
                pytest.fail(f"not a JSON log line: {line[:200]!r}")
            assert isinstance(record, dict), line
            parsed.append(record)
        return parsed

    def stop(self) -> int:
        """SIGTERM, and the exit code: 0, or -SIGTERM from uvicorn, which re-raises the
        signal once it has shut down gracefully."""
        if self.popen.poll() is None:
            stop(self.popen)
        return self.popen.returncode


def start(
    tmp_path: Path, database_url: str, *args: str, env: dict[str, str] | None = None
) -> Process:
    port = free_port()
    settings = {
        "RUTA_HOST": "127.0.0.1",
        "RUTA_PORT": str(port),
        "RUTA_EMBEDDED_WORKER": "false",
        "RUTA_RATE_LIMIT_BACKEND": "memory",
    }
    settings.update(env or {})
    environ = environment(database_url, **settings)
    name = "-".join(args)
    out, err = tmp_path / f"{name}-{port}.out", tmp_path / f"{name}-{port}.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        popen = subprocess.Popen(
            [RUTA, *args], stdout=stdout, stderr=stderr, env=environ, stdin=subprocess.DEVNULL
        )
    return Process(popen, out, err, port)


def wait_until(condition: Any, process: Process, what: str) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if condition():
            return
        if process.popen.poll() is not None:
            pytest.fail(f"exited ({process.popen.returncode}) before {what}: {process.lines()}")
        time.sleep(0.1)
    process.stop()
    pytest.fail(f"no {what} within {START_SECONDS} s")


@pytest.fixture
def serve(tmp_path: Path, database_url: str) -> Iterator[Any]:
    """``serve(env)``: a running `ruta serve` on this test's database; stopped at the end."""
    started: list[Process] = []

    def run(env: dict[str, str] | None = None) -> Process:
        process = start(tmp_path, database_url, "serve", env=env)
        started.append(process)

        def healthy() -> bool:
            try:
                return httpx.get(f"{process.url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, process, "answer on /healthz")
        return process

    yield run
    for process in started:
        process.stop()


async def test_every_line_of_serve_is_json_and_a_database_error_quotes_no_value(
    serve: Any, api_key: KeyFactory, poisoned: str
) -> None:
    """The database refuses the poisoned case code's subject: the screening's group fails,
    is written again alone, fails, and the request answers 500. uvicorn logs the exception
    (Starlette re-raises it after the 500); once, SQLAlchemy's `[parameters: …]` in that
    traceback printed the case code."""
    key = await api_key("clinic", "Caravana de la Vida")
    process = serve()
    body = screening(subject__case_code=poisoned, subject__name="CANARY-SERVE-NAME")
    # One connection each: uvicorn closes the connection of a request whose exception it
    # logged.
    async with httpx.AsyncClient(base_url=process.url, timeout=30) as client:
        failed = await client.post("/v1/screenings", json=body, headers=bearer(key))
    async with httpx.AsyncClient(base_url=process.url, timeout=30) as client:
        stored = await client.post("/v1/screenings", json=screening(), headers=bearer(key))
    assert failed.status_code == 500
    assert stored.status_code == 201, stored.text
    assert process.stop() in (0, -signal.SIGTERM)
    records = process.records()
    events = [str(r.get("event")) for r in records]
    assert any(e.startswith("Started server process") for e in events), events
    assert "Application startup complete." in events
    assert any(e.startswith("Shutting down") or e == "Finished server process" for e in events)
    assert {r.get("status") for r in records if r.get("event") == "request"} >= {500, 201}
    assert not [r for r in records if r.get("logger") == "uvicorn.access"]
    [crash] = [r for r in records if str(r.get("event")).startswith("Exception in ASGI")]
    assert crash["logger"] == "uvicorn.error"
    assert any(link["type"].startswith("sqlalchemy.") for link in crash["exception"])
    # Where it failed in Ruta is kept; what it said is not.
    assert any("app/services/" in frame for link in crash["exception"] for frame in link["frames"])
    text = "\n".join(process.lines())
    assert poisoned not in text
    assert "CANARY" not in text
    assert "[parameters" not in text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_bind_error_is_a_json_line(tmp_path: Path, database_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = start(tmp_path, database_url, "serve", env={"RUTA_PORT": str(port)})
        try:
            code = process.popen.wait(timeout=START_SECONDS)
        except subprocess.TimeoutExpired:
            process.stop()
            pytest.fail("serve kept running on a port in use")
    assert code != 0
    errors = [r for r in process.records() if r.get("level") == "error"]
    assert any("address already in use" in str(r.get("event")).lower() for r in errors), errors


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_refused_start_is_a_json_line_without_the_values(
    tmp_path: Path, database_url: str
) -> None:
    process = start(
        tmp_path,
        database_url,
        "serve",
        env={"RUTA_ENV": "production", "RUTA_SECRET_KEY": "CANARY-short-secret"},
    )
    assert process.popen.wait(timeout=START_SECONDS) == 2
    [record] = process.records()
    assert record["event"] == "settings_refused"
    assert "refusing to start" in record["reason"]
    assert "CANARY" not in "\n".join(process.lines())


LIMIT = 3


def _failed_authentications(process: Process, forwarded_for: list[str]) -> list[int]:
    statuses = []
    with httpx.Client(base_url=process.url, timeout=10) as client:
        for address in forwarded_for:
            response = client.get(
                "/v1/referrals",
                headers={**bearer("ruta_000000000000_wrong"), "X-Forwarded-For": address},
            )
            statuses.append(response.status_code)
    return statuses


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_spoofed_forwarded_for_does_not_escape_the_failed_authentication_limit(
    serve: Any,
) -> None:
    """The caller is on loopback, which uvicorn trusted by default: a new X-Forwarded-For
    for every try gave it a fresh limit each time."""
    process = serve({"RUTA_RATE_LIMIT_UNAUTHENTICATED": str(LIMIT)})
    spoofed = [f"203.0.113.{n}" for n in range(1, LIMIT + 3)]
    assert _failed_authentications(process, spoofed) == [401] * LIMIT + [429, 429]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_trusted_proxys_forwarded_for_is_the_client_address(serve: Any) -> None:
    process = serve(
        {"RUTA_RATE_LIMIT_UNAUTHENTICATED": str(LIMIT), "RUTA_TRUSTED_PROXIES": "127.0.0.0/8"}
    )
    # Each client behind the proxy has its own limit...
    distinct = [f"203.0.113.{n}" for n in range(1, LIMIT + 3)]
    assert _failed_authentications(process, distinct) == [401] * (LIMIT + 2)
    # ...and one client keeps its own, whatever it puts in front of the proxy's entry.
    same = [f"198.51.100.{n}, 203.0.113.99" for n in range(LIMIT + 1)]
    assert _failed_authentications(process, same) == [401] * LIMIT + [429]
