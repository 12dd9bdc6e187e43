"""How much of the bare endpoint's rate Ruta's request path leaves before intake does any work.

    python -m bench.floor [--duration 10] [--connections 32]

Runs three servers one after the other on this machine, each driven by wrk as in
bench/intake.py (32 connections, unique screening ids, the README's example screening):

* the bare endpoint (bench/bare.py);
* Ruta on PostgreSQL with intake's work replaced by a canned result (bench/canned.py):
  authentication, validation, the middleware, the request's session and the receipt stay,
  deciding, matching and storing go;
* Ruta on PostgreSQL as it is.

The canned rate bounds what any intake could reach behind this request path. When it is
itself near the target ratio, the target cannot be met by making intake cheaper alone
(docs/performance.md, "What the target would take").
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from bench.directory import write_directory
from bench.intake import (
    PYTHON,
    RUTA,
    Result,
    create_key,
    drop_database,
    free_port,
    fresh_secrets,
    measure,
    postgres_database,
    print_ratios,
    ruta_env,
)


def uvicorn(target: str, port: int, *, factory: bool = False) -> list[str]:
    command = [PYTHON, "-m", "uvicorn", target, "--port", str(port)]
    command += ["--log-level", "warning", "--no-access-log"]
    return command + (["--factory", "--proxy-headers"] if factory else [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install wrk", file=sys.stderr)
        return 2
    pg = postgres_database()
    if pg is None:
        print("PostgreSQL is needed (BENCH_POSTGRES_URL or 127.0.0.1:5432)", file=sys.stderr)
        return 2
    admin, url = pg
    print(f"request-path floor: {args.connections} connections, {args.duration} s each")
    results: list[Result] = []
    port = free_port()
    results.append(
        measure("bare FastAPI", uvicorn("bench.bare:app", port), dict(os.environ), port, "", args)
    )
    scratch = Path(tempfile.mkdtemp(prefix="ruta-floor-"))
    directory = write_directory(scratch / "directory.yaml", "https://partners.bench.invalid")
    deployment = fresh_secrets()
    try:
        port = free_port()
        env = ruta_env(url, port, 1, directory, deployment)
        key = create_key(env)
        canned = uvicorn("bench.canned:create_app", port, factory=True)
        results.append(measure("ruta, intake canned", canned, env, port, key, args))
        port = free_port()
        env = ruta_env(url, port, 1, directory, deployment)
        results.append(measure("ruta", [RUTA, "serve"], env, port, key, args))
    finally:
        drop_database(admin, url)
        shutil.rmtree(scratch, ignore_errors=True)
    print_ratios(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
