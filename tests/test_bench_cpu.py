"""bench/cpu.py: the CPU split the emergency benchmark reports (docs/performance.md)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench import cpu

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")

#: A child that names itself (its /proc name), burns ``seconds`` of CPU, says so, and idles.
CHILD = """
import sys, time
open("/proc/self/comm", "w").write({name!r})
end = time.process_time() + {seconds}
while time.process_time() < end:
    pass
sys.stdout.write("done")
sys.stdout.flush()
time.sleep(30)
"""


def _child(name: str, seconds: float) -> subprocess.Popen[bytes]:
    code = CHILD.format(name=name, seconds=seconds)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)


def _burned(process: subprocess.Popen[bytes]) -> None:
    assert process.stdout is not None
    assert process.stdout.read(4) == b"done"


def test_cpu_used_in_the_window_is_counted_for_the_role_of_an_ancestor() -> None:
    idle = _child("idle", 0)
    _burned(idle)
    busy = _child("busy", 0.5)
    try:
        before = cpu.Snapshot.take({"bench": [os.getpid()], "idle": [idle.pid]})
        assert busy.pid in cpu.descendants(os.getpid())
        _burned(busy)
        used = before.used(cpu.Snapshot.take({"bench": [os.getpid()], "idle": [idle.pid]}))
    finally:
        for process in (busy, idle):
            process.kill()
            process.wait()
    assert used["bench"] >= 0.3  # the child's burn, under its parent's role
    assert used["idle"] < 0.1
    assert used["wall"] > 0
    assert "postgres" in used
    assert cpu.cpu_seconds(busy.pid) is None  # gone


def test_a_process_named_with_spaces_and_parentheses_is_read_past_its_name() -> None:
    # /proc/<pid>/stat puts the name in parentheses, and a name may hold both.
    process = _child("a) (b c", 0.3)
    try:
        _burned(process)
        seconds = cpu.cpu_seconds(process.pid)
    finally:
        process.kill()
        process.wait()
    assert seconds is not None
    assert 0.25 <= seconds < 5
