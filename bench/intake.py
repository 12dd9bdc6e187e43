"""Intake throughput and latency, side by side with the bare endpoint, in one run.

    python -m bench.intake [--duration 10] [--connections 32]

Starts, one after the other on this machine: the bare FastAPI endpoint (bench/bare.py), Ruta
on SQLite and Ruta on PostgreSQL (one worker process, then several), and drives each with
wrk (32 connections, unique screening ids) on the same payload. Reports requests per second,
p50/p99 latency, resident memory per server process, and every result as a ratio to the
bare endpoint measured in the same run. Needs `wrk` (Debian package) and, for the
PostgreSQL runs, BENCH_POSTGRES_URL or a local server at 127.0.0.1:5432.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from app.schemas.examples import EXAMPLE_SCREENING
from bench.directory import write_directory

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
RUTA = str(Path(PYTHON).with_name("ruta"))

LUA = r"""
local template = [==[__TEMPLATE__]==]
local key = "__KEY__"
local counter = 0
math.randomseed(os.time() + __SEED__)
local function hex(n)
  local out = {}
  for i = 1, n do out[i] = string.format("%x", math.random(0, 15)) end
  return table.concat(out)
end
local function uuid4()
  return hex(8) .. "-" .. hex(4) .. "-4" .. hex(3) .. "-" ..
    string.format("%x", math.random(8, 11)) .. hex(3) .. "-" .. hex(12)
end
request = function()
  counter = counter + 1
  local body = template:gsub("__ID__", uuid4()):gsub("__CASE__", "BENCH-" .. hex(6))
  local headers = {["Content-Type"] = "application/json"}
  if key ~= "" then headers["Authorization"] = "Bearer " .. key end
  return wrk.format("POST", "/v1/screenings", headers, body)
end
"""


@dataclass
class Result:
    name: str
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    rss_mib: float
    processes: int
    #: Each process's resident memory: uvicorn's supervisor first, then its workers.
    rss_per_process_mib: list[float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)  # noqa: S310 - loopback only
            return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not become healthy")


def rss_mib(pid: int) -> list[float]:
    """Resident memory of a process and of each of its children (uvicorn workers), in MiB,
    the process first."""
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    sizes: list[float] = []
    for p in pids:
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        if match:
            sizes.append(int(match.group(1)) / 1024)
    return sizes


def parse_latency(text: str, label: str) -> float:
    match = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)", text)
    if not match:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def write_wrk_script(key: str, document: dict[str, Any]) -> str:
    """Write wrk's Lua script to a temporary file (the caller deletes it) and return its
    path: it POSTs ``document`` with a fresh id and case code each time."""
    template = json.dumps(
        {**document, "id": "__ID__", "subject": {**document["subject"], "case_code": "__CASE__"}}
    )
    script = LUA.replace("__TEMPLATE__", template).replace("__KEY__", key)
    script = script.replace("__SEED__", str(secrets.randbelow(1_000_000)))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    return handle.name


def wrk_non_2xx(out: str) -> int:
    """The answers wrk counted as neither 2xx nor 3xx."""
    found = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return int(found.group(1)) if found else 0


def run_wrk(
    port: int, key: str, duration: int, connections: int
) -> tuple[float, float, float, int]:
    path = write_wrk_script(key, EXAMPLE_SCREENING)
    try:
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{duration}s",
                "--latency",
                "-s",
                path,
                f"http://127.0.0.1:{port}",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    finally:
        os.unlink(path)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return rps, parse_latency(out, "50"), parse_latency(out, "99"), wrk_non_2xx(out)


def fresh_secrets() -> dict[str, str]:
    """A deployment's secrets. Runs that share a database must share these too: a subject
    stored under one KEK cannot be read under another (intake answers 500 undecryptable)."""
    return {
        "RUTA_SECRET_KEY": secrets.token_urlsafe(48),
        "RUTA_ENCRYPTION_KEK": base64.b64encode(os.urandom(32)).decode(),
        "RUTA_AUDIT_SIGNING_KEY": base64.b64encode(os.urandom(32)).decode(),
    }


def ruta_env(
    database_url: str,
    port: int,
    workers: int,
    directory: Path | None = None,
    deployment: dict[str, str] | None = None,
) -> dict[str, str]:
    """Production settings, with ``deployment``'s secrets or fresh ones. With
    ``directory``, every referral is matched and written to the outbox; the delivery worker
    is off (in production it is its own process), so what is measured is intake alone."""
    env = dict(os.environ)
    env.update(deployment or fresh_secrets())
    env.update(
        {
            "RUTA_ENV": "production",
            "RUTA_DATABASE_URL": database_url,
            "RUTA_HOST": "127.0.0.1",
            "RUTA_PORT": str(port),
            "RUTA_WORKERS": str(workers),
            "RUTA_RATE_LIMIT_BACKEND": "off",
            "RUTA_LOG_LEVEL": "WARNING",
            "RUTA_EMBEDDED_WORKER": "false",
        }
    )
    if directory is not None:
        env["RUTA_PARTNERS_PATH"] = str(directory)
    if database_url.startswith("postgresql"):
        # Production refuses to serve as the tables' owner or a superuser (docs/operations.md):
        # migrate as the admin URL's role, serve as a plain role that `ruta migrate` grants.
        env["RUTA_MIGRATION_DATABASE_URL"] = database_url
        env["RUTA_DATABASE_URL"] = service_url(database_url)
    return env


SERVICE_ROLE = "ruta_bench_service"


def service_url(admin_url: str) -> str:
    """``admin_url`` with the benchmark's unprivileged login role (made once, if missing)."""
    make = (
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{SERVICE_ROLE}') "
        f"THEN CREATE ROLE {SERVICE_ROLE} LOGIN; END IF; END $$"
    )
    subprocess.run(["psql", admin_url, "-qc", make], check=True, capture_output=True)
    scheme, rest = admin_url.split("://", 1)
    return f"{scheme}://{SERVICE_ROLE}@{rest.split('@', 1)[1]}"


def measure(
    name: str, cmd: list[str], env: dict[str, str], port: int, key: str, args: argparse.Namespace
) -> Result:
    # The server's warnings and errors (RUTA_LOG_LEVEL=WARNING) explain any non-2xx answer.
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", prefix="ruta-bench-")  # noqa: SIM115
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/healthz" if key else f"http://127.0.0.1:{port}/docs")
        run_wrk(port, key, 2, args.connections)  # warm-up
        rps, p50, p99, non_2xx = run_wrk(port, key, args.duration, args.connections)
        sizes = rss_mib(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.seek(0)
        problems = [line.strip() for line in log if '"level": "error"' in line]
        log.close()
    for line in problems[:5]:
        print(f"    server error: {line}", flush=True)
    memory, processes = sum(sizes), len(sizes)
    result = Result(name, rps, p50, p99, non_2xx, memory, processes, [round(m) for m in sizes])
    each = " + ".join(f"{m:.0f}" for m in sizes) if processes > 1 else ""
    print(
        f"  {name:<28} {rps:>9.0f} req/s  p50 {p50:>7.2f} ms  p99 {p99:>7.2f} ms  "
        f"non-2xx {non_2xx}  rss {memory:.0f} MiB in {processes} process(es)"
        + (f" ({each})" if each else ""),
        flush=True,
    )
    return result


def create_key(env: dict[str, str]) -> str:
    subprocess.run([RUTA, "migrate"], env=env, check=True, capture_output=True)
    out = subprocess.run(
        [
            RUTA,
            "clients",
            "create",
            "--name",
            "bench",
            "--role",
            "clinic",
            "--organisation",
            "Caravana de la Vida",
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.strip().splitlines()[-1]


def drop_database(admin: str, url: str) -> None:
    """Drop the database :func:`postgres_database` made."""
    drop = f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'
    subprocess.run(["psql", admin, "-qc", drop], capture_output=True)


def print_ratios(results: list[Result]) -> None:
    """Each result as a ratio to the first (the bare endpoint), measured in the same run."""
    bare = results[0].requests_per_second
    print("\nratios to the bare endpoint, same run:")
    for result in results[1:]:
        print(f"  {result.name:<28} {result.requests_per_second / bare:6.1%}")


def postgres_database() -> tuple[str, str] | None:
    admin = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    if shutil.which("psql") is None:
        return None
    name = f"ruta_bench_{os.getpid()}"
    made = subprocess.run(["psql", admin, "-qc", f'CREATE DATABASE "{name}"'], capture_output=True)
    if made.returncode != 0:
        return None
    return admin, admin.rsplit("/", 1)[0] + "/" + name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install wrk", file=sys.stderr)
        return 2
    results: list[Result] = []
    print(f"intake benchmark: {args.connections} connections, {args.duration} s each", flush=True)

    port = free_port()
    results.append(
        measure(
            "bare FastAPI (1 process)",
            [
                PYTHON,
                "-m",
                "uvicorn",
                "bench.bare:app",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            dict(os.environ),
            port,
            "",
            args,
        )
    )
    scratch = Path(tempfile.mkdtemp(prefix="ruta-bench-"))
    # Partner endpoints are never called here (no worker runs): .invalid never resolves.
    directory = write_directory(scratch / "directory.yaml", "https://partners.bench.invalid")
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = ruta_env(f"sqlite+aiosqlite:///{tmp}/bench.db", port, 1, directory)
        key = create_key(env)
        results.append(measure("ruta SQLite (1 process)", [RUTA, "serve"], env, port, key, args))

    pg = postgres_database()
    if pg is None:
        print("  PostgreSQL unavailable: skipping the PostgreSQL runs", flush=True)
    else:
        admin, url = pg
        deployment = fresh_secrets()  # both runs use one database, so one set of keys
        try:
            for workers in (1, args.workers):
                port = free_port()
                env = ruta_env(url, port, workers, directory, deployment)
                key = create_key(env)
                results.append(
                    measure(
                        f"ruta PostgreSQL ({workers} process)",
                        [RUTA, "serve"],
                        env,
                        port,
                        key,
                        args,
                    )
                )
        finally:
            drop_database(admin, url)

    print_ratios(results)
    args.output.mkdir(parents=True, exist_ok=True)
    out = args.output / f"intake-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps([asdict(r) for r in results], indent=2))
    print(f"\nresults written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
