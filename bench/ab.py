"""Two versions of Ruta side by side, in one run: intake's ratio to the bare endpoint and the
emergency POST→partner latency under saturating load (issue 19: "neither may get worse").

    python -m bench.ab --baseline 6e5e4c4 [--candidate HEAD] [--rounds 3]

A shared machine's speed drifts from minute to minute (other work on the same cores), so a
figure measured on one version and compared with a figure measured earlier on another says
little. This runs the two versions alternately (A B, then B A, then A B …), each measurement
next to its own bare-endpoint measurement, and reports every round and the median of each.

* Each version is a ``git worktree`` of its commit in a scratch folder (``--candidate .``
  takes this working tree as it is). Servers run that version's code (``PYTHONPATH``), on
  this virtual environment; the bare endpoint and the load (wrk) are the same for both.
* Intake: ``bench.intake``'s measurement (32 connections, the README's screening, unique
  ids) of Ruta on SQLite and on PostgreSQL (one process each), each as a ratio to the bare
  FastAPI endpoint measured just before it.
* Emergencies: ``python -m bench.delivery --saturating-clients 32`` (the ``make bench``
  case; this tree's benchmark, the version's code): the p99 and median from POST to the
  partner holding the emergency, on PostgreSQL, while wrk posts routine screenings back to
  back.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import intake
from bench.delivery import percentile
from bench.directory import write_directory

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Side:
    """One version under test: its label, commit and source tree."""

    label: str
    ref: str
    tree: Path
    intake: dict[str, list[float]] = field(default_factory=dict)
    emergency: dict[str, list[float]] = field(default_factory=dict)
    #: Every emergency's latency, whole and in its two parts, over all rounds.
    pooled: dict[str, list[float]] = field(default_factory=dict)
    #: CPU ms per screening each role used while the emergencies were posted (bench.cpu).
    cpu: dict[str, list[float]] = field(default_factory=dict)

    def env(self, base: dict[str, str]) -> dict[str, str]:
        return {**base, "PYTHONPATH": str(self.tree)}

    def check_imports(self) -> None:
        """Refuse to measure if this environment would import another tree's ``app``."""
        found = subprocess.run(
            [intake.PYTHON, "-c", "import app; print(app.__file__)"],
            env=self.env(dict(os.environ)),
            cwd=tempfile.gettempdir(),  # as the `ruta` script runs: no current folder on the path
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if not Path(found).resolve().is_relative_to(self.tree.resolve()):
            raise SystemExit(f"{self.label} would run {found}, not the code of {self.tree}")


@contextmanager
def checkout(label: str, ref: str) -> Iterator[Side]:
    """``ref`` as a detached worktree in a scratch folder (``.``: this tree as it is)."""
    if ref == ".":
        yield Side(label, _describe("HEAD") + " + working tree", ROOT)
        return
    scratch = Path(tempfile.mkdtemp(prefix=f"ruta-ab-{label}-"))
    tree = scratch / "tree"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), ref], check=True
    )
    try:
        yield Side(label, _describe(ref), tree)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)])
        shutil.rmtree(scratch, ignore_errors=True)


def _describe(ref: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%h %s", ref],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()[:90]


def _bare(args: argparse.Namespace) -> float:
    port = intake.free_port()
    command = [intake.PYTHON, "-m", "uvicorn", "bench.bare:app", "--port", str(port)]
    command += ["--log-level", "warning", "--no-access-log"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return intake.measure("bare FastAPI", command, env, port, "", args).requests_per_second


def _ruta(side: Side, name: str, env: dict[str, str], args: argparse.Namespace) -> float:
    env = side.env(env)
    key = intake.create_key(env)
    port = int(env["RUTA_PORT"])
    result = intake.measure(f"{side.label}: {name}", [intake.RUTA, "serve"], env, port, key, args)
    if result.non_2xx:
        raise SystemExit(f"{side.label} answered {result.non_2xx} non-2xx: not comparable")
    return result.requests_per_second


def measure_intake(side: Side, directory: Path, args: argparse.Namespace) -> None:
    """One round of intake for ``side``: SQLite, then PostgreSQL, each after a bare run."""
    with tempfile.TemporaryDirectory() as tmp:
        bare = _bare(args)
        env = intake.ruta_env(f"sqlite+aiosqlite:///{tmp}/ab.db", intake.free_port(), 1, directory)
        ratio = _ruta(side, "ruta SQLite", env, args) / bare
        side.intake.setdefault("SQLite", []).append(ratio)
    made = intake.postgres_database()
    if made is None:
        print("  PostgreSQL unavailable: intake on SQLite only", flush=True)
        return
    admin, url = made
    try:
        bare = _bare(args)
        env = intake.ruta_env(url, intake.free_port(), 1, directory)
        side.intake.setdefault("PostgreSQL", []).append(
            _ruta(side, "ruta PostgreSQL", env, args) / bare
        )
    finally:
        intake.drop_database(admin, url)


def measure_emergencies(side: Side, args: argparse.Namespace) -> None:
    """One round of ``bench.delivery`` under saturating load, on ``side``'s code. The
    benchmark itself is this tree's (both sides are driven and timed alike): a folder
    holding only this tree's ``bench`` package comes first on the path, then ``side``'s."""
    with tempfile.TemporaryDirectory() as tmp:
        shim = Path(tmp) / "shim"
        shim.mkdir()
        (shim / "bench").symlink_to(ROOT / "bench")
        out = Path(tmp) / "delivery.json"
        command = [intake.PYTHON, "-m", "bench.delivery", "--output", str(out)]
        command += ["--deliveries", "40", "--emergencies", str(args.emergencies)]
        command += ["--saturating-clients", str(args.clients), "--saturating-api-processes", "1"]
        command += ["--only-saturated"]
        env = {**os.environ, "PYTHONPATH": f"{shim}{os.pathsep}{side.tree}"}
        done = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True)
        if done.returncode != 0 or not out.exists():
            print(done.stdout[-2000:], done.stderr[-2000:], sep="\n", file=sys.stderr)
            raise SystemExit(f"{side.label}: bench.delivery failed ({done.returncode})")
        results: dict[str, Any] = json.loads(out.read_text())
    saturated = [r for r in results["latency"] if r.get("background_clients")]
    if not saturated:
        raise SystemExit(f"{side.label}: no saturated PostgreSQL run (is PostgreSQL up?)")
    run = saturated[0]
    for name in SPLIT:
        side.emergency.setdefault(name, []).append(float(run[name]))
    for name in POOLED:
        side.pooled.setdefault(name, []).extend(float(v) for v in run.get(name, []))
    cpu = run.get("cpu") or {}
    if cpu.get("screenings"):
        seconds = cpu["seconds"]
        side.cpu.setdefault("screenings/s", []).append(cpu["screenings"] / seconds["wall"])
        for role in sorted(k for k in seconds if k != "wall"):
            side.cpu.setdefault(role, []).append(seconds[role] / cpu["screenings"] * 1000)
    print(
        f"  {side.label}: emergency POST→partner under {args.clients} clients: "
        f"median {run['median_ms']:.0f} ms, p99 {run['p99_ms']:.0f} ms ({run['arrived']} arrived); "
        f"POST answered {run['post_median_ms']:.0f} / {run['post_p99_ms']:.0f} ms, then to the "
        f"partner {run['after_post_median_ms']:.0f} / {run['after_post_p99_ms']:.0f} ms",
        flush=True,
    )


#: What is kept of each emergency run: the whole latency, then its two parts (POST answered;
#: POST answered to the partner holding the referral), p99 and median of each.
SPLIT = (
    "p99_ms",
    "median_ms",
    "post_p99_ms",
    "post_median_ms",
    "after_post_p99_ms",
    "after_post_median_ms",
)


#: The per-emergency lists of a run that are pooled over the rounds.
POOLED = ("latencies_ms", "post_ms", "after_post_ms")


def report(sides: tuple[Side, Side]) -> None:
    a, b = sides
    print("\nSide by side, one value per round (order alternated A B, B A, …):")
    for side in sides:
        print(f"  {side.label} = {side.ref}")
    rows: list[tuple[str, list[float], list[float], str]] = []
    for name in a.intake:
        rows.append((f"intake/bare, {name}", a.intake[name], b.intake.get(name, []), "%"))
    for name in a.emergency:
        rows.append((f"emergency {name[:-3]}", a.emergency[name], b.emergency[name], "ms"))
    for name in a.cpu:
        label = "saturated, screenings/s" if name == "screenings/s" else f"CPU ms/screening, {name}"
        rows.append((label, a.cpu[name], b.cpu.get(name, []), "/s" if "/" in name else "ms1"))
    width = max((len(r[0]) for r in rows), default=28)
    print(f"  {'':<{width}} {'A rounds':<26} {'B rounds':<26} {'A median':>9} {'B median':>9}")
    for name, xs, ys, unit in rows:
        shown = [_fmt(xs, unit), _fmt(ys, unit)]
        medians = [_one(statistics.median(v), unit) if v else "-" for v in (xs, ys)]
        print(f"  {name:<{width}} {shown[0]:<26} {shown[1]:<26} {medians[0]:>9} {medians[1]:>9}")
    _report_pooled(a, b)
    print(
        "  Higher is better for intake/bare, lower for the emergency latency. A difference "
        "smaller than the spread within each version's rounds is not a difference."
    )


def _report_pooled(a: Side, b: Side) -> None:
    """Each side's emergencies of every round together: a round's p99 of 40 is its
    slowest emergency, so the rounds' p99s are noisy; pooled, p90 and p99 rest on more."""
    if not a.pooled.get("latencies_ms"):
        return
    print("  Emergencies of all rounds pooled (A | B): p50, p90, p99, n")
    for name in POOLED:
        cells = []
        for side in (a, b):
            values = side.pooled.get(name, [])
            qs = (percentile(values, q) for q in (0.5, 0.9, 0.99))
            cells.append(" ".join(f"{q:>5.0f}" for q in qs) + f" n={len(values)}")
        print(f"    {name:<14} {cells[0]:<26} | {cells[1]}")


def _one(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value:.1%}"
    return f"{value:.1f}" if unit == "ms1" else f"{value:.0f}"


def _fmt(values: list[float], unit: str) -> str:
    return " ".join(_one(v, unit) for v in values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--baseline", required=True, help="commit A (e.g. 6e5e4c4)")
    parser.add_argument("--candidate", default=".", help="commit B; '.' is this working tree")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds of wrk per intake run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--emergencies", type=int, default=40)
    parser.add_argument("--clients", type=int, default=32, help="saturating clients")
    parser.add_argument("--skip-emergencies", action="store_true")
    parser.add_argument("--skip-intake", action="store_true")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install wrk", file=sys.stderr)
        return 2
    with (
        checkout("A", args.baseline) as a,
        checkout("B", args.candidate) as b,
        tempfile.TemporaryDirectory() as scratch,
    ):
        directory = write_directory(Path(scratch) / "directory.yaml", "https://ab.bench.invalid")
        a.check_imports()
        b.check_imports()
        for round_no in range(args.rounds):
            order = (a, b) if round_no % 2 == 0 else (b, a)
            print(f"round {round_no + 1}/{args.rounds}: {order[0].label} then {order[1].label}")
            for side in order:
                if not args.skip_intake:
                    measure_intake(side, directory, args)
                if not args.skip_emergencies:
                    measure_emergencies(side, args)
        report((a, b))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
