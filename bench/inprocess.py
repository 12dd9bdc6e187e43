"""Intake in-process, one request at a time: CPU and statements per screening.

    python -m bench.inprocess [--engine postgresql|sqlite] [--requests 300] [--concurrency 1]
                              [--profile FILE]

This is the tool behind the step-by-step table in docs/performance.md. It runs the real app
(production settings, the benchmark partner directory, worker off) under an in-process
HTTP client, so there is no network and no concurrency: what it reports is the work one
screening costs, which noise on a shared machine disturbs less than throughput under load.
The same loop against the bare endpoint (bench/bare.py) gives the framework's share.
``--concurrency N`` posts N screenings at a time instead (waves of N concurrent requests),
which shows what group commit saves per screening when requests overlap.
With ``--profile`` it writes a pyinstrument report (``pip install pyinstrument``).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event

from app.schemas.examples import EXAMPLE_SCREENING
from bench import intake as wrk_bench
from bench.directory import write_directory


def body() -> dict[str, Any]:
    document = copy.deepcopy(EXAMPLE_SCREENING)
    document["id"] = str(uuid.uuid4())
    document["subject"]["case_code"] = "BENCH-" + uuid.uuid4().hex[:6]
    return document


async def loop(
    client: httpx.AsyncClient, headers: dict[str, str], n: int, concurrency: int = 1
) -> tuple[float, float]:
    """Post ``n`` screenings, ``concurrency`` at a time; CPU and wall seconds per screening."""
    bodies = [body() for _ in range(n)]
    started, cpu = time.perf_counter(), time.process_time()
    for wave in range(0, n, concurrency):
        responses = await asyncio.gather(
            *(
                client.post("/v1/screenings", json=document, headers=headers)
                for document in bodies[wave : wave + concurrency]
            )
        )
        for response in responses:
            if response.status_code not in (200, 201):
                raise RuntimeError(f"{response.status_code}: {response.text}")
    return (time.process_time() - cpu) / n, (time.perf_counter() - started) / n


async def measure_bare(n: int, concurrency: int) -> tuple[float, float]:
    from bench.bare import app

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        await loop(client, {}, 50, concurrency)
        return await loop(client, {}, n, concurrency)


async def measure_ruta(
    env: dict[str, str], key: str, n: int, concurrency: int, profile: bool
) -> tuple[float, float, float, Counter[str], str]:
    os.environ.update(env)
    from app.main import create_app
    from app.settings import Settings

    app = create_app(Settings())
    statements: Counter[str] = Counter()
    async with app.router.lifespan_context(app):

        def count(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
            statements[statement.split("(")[0].split(" WHERE")[0][:60]] += 1

        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            await loop(client, headers, 30, concurrency)  # warm-up: caches, prepared statements
            event.listen(app.state.engine.sync_engine, "before_cursor_execute", count)
            profiler: Any = None
            report = ""
            if profile:
                import pyinstrument

                profiler = pyinstrument.Profiler(interval=0.001, async_mode="enabled")
                profiler.start()
            cpu, wall = await loop(client, headers, n, concurrency)
            if profiler is not None:
                profiler.stop()
                report = profiler.output_text(unicode=False)
    return cpu, wall, sum(statements.values()) / n, statements, report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--engine", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument(
        "--concurrency", type=int, default=1, help="screenings posted at a time (default 1)"
    )
    parser.add_argument("--profile", type=Path, default=None, help="write a pyinstrument report")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="ruta-inprocess-"))
    admin: str | None = None
    if args.engine == "postgresql":
        made = wrk_bench.postgres_database()
        if made is None:
            print("PostgreSQL unavailable (BENCH_POSTGRES_URL or 127.0.0.1:5432)")
            return 2
        admin, url = made
    else:
        url = f"sqlite+aiosqlite:///{scratch}/bench.db"
    directory = write_directory(scratch / "directory.yaml", "https://partners.bench.invalid")
    env = wrk_bench.ruta_env(url, 8000, 1, directory)  # no server is started
    try:
        key = wrk_bench.create_key(env)
        bare_cpu, _ = asyncio.run(measure_bare(args.requests, args.concurrency))
        cpu, wall, per_request, statements, report = asyncio.run(
            measure_ruta(env, key, args.requests, args.concurrency, args.profile is not None)
        )
        if args.profile is not None:
            args.profile.write_text(report)
    finally:
        if admin is not None:
            name = url.rsplit("/", 1)[1]
            subprocess.run(
                ["psql", admin, "-qc", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'],
                capture_output=True,
            )
    at_a_time = "one" if args.concurrency == 1 else str(args.concurrency)
    print(f"{args.engine}, {args.requests} screenings {at_a_time} at a time, in-process client:")
    print(f"  bare endpoint  {bare_cpu * 1000:6.2f} ms CPU per request")
    print(f"  ruta intake    {cpu * 1000:6.2f} ms CPU per screening ({wall * 1000:.2f} ms wall)")
    print(f"  statements     {per_request:6.2f} per screening")
    for statement, count in statements.most_common():
        print(f"    {count / args.requests:5.2f}  {statement}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
