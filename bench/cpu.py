"""Where a benchmark's CPU went, process by process (Linux ``/proc``).

A latency measured under saturating load grows when any process on the same cores takes
more CPU: the API process, the delivery worker, PostgreSQL's backends, the load generator.
Two snapshots around the measured window tell them apart::

    before = Snapshot.take({"api": [server.pid], "worker": [worker.pid]})
    ...
    used = before.used(Snapshot.take(...))   # {"api": 4.1, "worker": 3.2, "postgres": 2.9}

``postgres`` (every process whose name is ``postgres``: the server's backends and its
background processes, whichever database they serve) is always included. A process that
ended inside the window takes its CPU with it; PostgreSQL's backends are the pooled
connections, which live as long as the processes holding them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                with suppress(OSError):
                    todo += [int(c) for c in (task / "children").read_text().split()]
    return found


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU of one process so far; None once it has gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The name (field 2) may hold spaces: the fields after it start past its ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError):
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
    return pids


@dataclass(frozen=True)
class Snapshot:
    """CPU seconds per process, grouped by role, at one moment."""

    at: float
    roles: Mapping[str, Mapping[int, float]]

    @classmethod
    def take(cls, roots: Mapping[str, Iterable[int]]) -> Snapshot:
        """Each role's processes (the given ones and their descendants), and PostgreSQL's."""
        groups = {role: [p for r in pids for p in descendants(r)] for role, pids in roots.items()}
        groups["postgres"] = postgres_pids()
        roles = {
            role: {pid: cpu for pid in pids if (cpu := cpu_seconds(pid)) is not None}
            for role, pids in groups.items()
        }
        return cls(os.times().elapsed, roles)

    def used(self, later: Snapshot) -> dict[str, float]:
        """CPU seconds each role used between this snapshot and ``later`` (a process that
        started in between counts from zero), and ``wall``: the seconds between them."""
        used = {
            role: sum(cpu - self.roles.get(role, {}).get(pid, 0.0) for pid, cpu in now.items())
            for role, now in later.roles.items()
        }
        return {**used, "wall": later.at - self.at}
