"""`ruta worker --check`: the worker container's own health check (it serves no port, so
the image's HTTP check on :8000 says nothing about it). A real worker process touches its
heartbeat file; the check passes while it runs and fails once it stopped or went silent."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.cli.test_commands import RUTA, environment, stop


def check(database_url: str, heartbeat: Path | None) -> subprocess.CompletedProcess[str]:
    extra = {"RUTA_WORKER_HEARTBEAT_PATH": str(heartbeat)} if heartbeat else {}
    return subprocess.run(
        [RUTA, "worker", "--check"],
        env=environment(database_url, **extra),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_check_follows_a_running_worker(database_url: str, tmp_path: Path) -> None:
    heartbeat = tmp_path / "worker.heartbeat"
    assert check(database_url, heartbeat).returncode == 1  # no worker yet
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [RUTA, "worker"],
            env=environment(database_url, RUTA_WORKER_HEARTBEAT_PATH=str(heartbeat)),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while not heartbeat.exists() and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            time.sleep(0.1)
        alive = check(database_url, heartbeat)
        assert alive.returncode == 0, alive.stderr
        assert "worker alive" in alive.stdout
    finally:
        if process.poll() is None:
            stop(process)
    assert process.returncode == 0, log.read_text()
    gone = check(database_url, heartbeat)
    assert gone.returncode == 1
    assert gone.stderr.startswith("error: no heartbeat")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_silent_worker_fails_the_check(database_url: str, tmp_path: Path) -> None:
    heartbeat = tmp_path / "worker.heartbeat"
    heartbeat.touch()
    assert check(database_url, heartbeat).returncode == 0
    old = time.time() - 120
    os.utime(heartbeat, (old, old))
    silent = check(database_url, heartbeat)
    assert silent.returncode == 1
    assert "last heartbeat is 12" in silent.stderr  # 120 s, or 121 by the time it looks


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_check_needs_the_heartbeat_path(database_url: str) -> None:
    result = check(database_url, None)
    assert result.returncode == 2
    assert "RUTA_WORKER_HEARTBEAT_PATH" in result.stderr
