"""Storage per screening on PostgreSQL, through the real write path.

    python -m bench.storage [--screenings 2000] [--database-url postgresql://…/postgres]
                            [--processes 2] [--workers 1] [--seed N] [--keep]

1. Creates a fresh database (``ruta_bench_storage_<random>``) on the server of
   ``--database-url`` (default: 127.0.0.1:5432 as postgres) and migrates it; with ``--keep``
   it is left for inspection, otherwise dropped.
2. Posts ``--screenings`` varied screenings (the README's example, varied field by field over
   the schemas' own value lists: ages from infants to adults, every region, consent given or
   not, scopes, danger, indicators, health, needs) through ``POST /v1/screenings/batch`` in
   batches of 100, in ``--processes`` processes running the real app in-process. The
   directory is the demo directory (every role, console-only partner included) with each
   endpoint pointed at a loopback partner that answers 200 and ample capacity.
3. Runs ``--workers`` ``ruta worker`` processes (default 2, each ``--concurrency 20``: what
   an operator runs for throughput on a two-core machine, one worker process per core) while
   posting, as production does, and until no delivery is pending, so the outbox rows are
   what they are after delivery (status, attempts, finished_at), updated in place as they
   would be. Delivery guarantees are the production ones (at most 4 in flight per partner,
   leases, one transaction per outcome).
4. If the server runs without autovacuum (``autovacuum = off``, as on the shared benchmark
   machine), does what autovacuum would do with its default settings: every minute, a
   plain ``VACUUM`` of each table with more dead rows than 50 + 20% of its rows, or more
   rows inserted since its last vacuum than 1000 + 20% (PostgreSQL 13+). Without it, no
   space freed by updates is reused while the run lasts, which production does not see.
5. Reads ``pg_total_relation_size`` (heap + TOAST + indexes) of every table, after a plain
   ``VACUUM ANALYZE`` (what autovacuum would have done; the files are not rewritten) and
   again after ``VACUUM FULL`` (live rows only), and prints bytes per screening per table,
   each table's heap and indexes as stored, the totals, and PASS/FAIL against 12 KiB (as
   stored, the first figure).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.engine import make_url
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.schemas.examples import EXAMPLE_SCREENING
from bench.delivery import _process

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
RUTA = str(Path(PYTHON).with_name("ruta"))
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
TARGET_BYTES = 12 * 1024
BATCH = 100

# --- the loopback partner: python -m uvicorn bench.storage:partner_app ---------------------


_CAPTURE = os.environ.get("BENCH_CAPTURE_DIR")


async def _accept(request: Request) -> Response:
    """Answer 200; with BENCH_CAPTURE_DIR set, keep each body there (dictionary training)."""
    body = await request.body()
    if _CAPTURE:
        Path(_CAPTURE, uuid.uuid4().hex).write_bytes(body)  # noqa: ASYNC240 - bench only
    return Response(status_code=200)


partner_app = Starlette(routes=[Route("/{path:path}", _accept, methods=["POST"])])


# --- varied screenings ----------------------------------------------------------------------


def _values(enum_name: str) -> list[str]:
    from app.schemas import screening as schema

    return [m.value for m in getattr(schema, enum_name)]


def varied_screening(rng: random.Random, screened_at: datetime) -> dict[str, Any]:
    """The README's example with every field a rule reads drawn from its schema's values,
    weighted toward what clinics see (most people consent, danger is rarer)."""
    body: dict[str, Any] = json.loads(json.dumps(EXAMPLE_SCREENING))

    def rare() -> bool:
        return rng.random() < 0.2

    def some(enum_name: str, most: int = 3) -> list[str]:
        return rng.sample(_values(enum_name), rng.randint(0, most))

    age = rng.choice([rng.randint(0, 17), rng.randint(18, 70), rng.randint(18, 40)])
    body["id"] = str(uuid.uuid4())
    body["source"]["screened_at"] = screened_at.isoformat()
    body["source"]["screener"] = f"obst-{rng.randint(1, 60):03d}"
    body["subject"].update(
        case_code=f"BENCH-{uuid.uuid4().hex[:10]}",
        age=age,
        age_estimated=rng.random() < 0.4,
        sex=rng.choice(["female", "female", "male"]),
        preferred_language=rng.choice(["es", "es", "qu", "ay"]),
        region=rng.choice(_values("Region")),
        unaccompanied_minor=age < 18 and rng.random() < 0.5,
    )
    body["subject"].pop("ubigeo", None)
    given = rng.random() < 0.85
    body["consent"].update(
        given=given,
        scopes=rng.sample(_values("ConsentScope"), rng.randint(1, 4)) if given else [],
        share_identifying=given and rng.random() < 0.3,
        method="verbal" if given else "not_obtained",
    )
    body["consent"].pop("recorded_at", None)
    body["safety"].update(
        immediate_danger=rare(),
        trafficker_nearby=rare(),
        can_return_safely=rng.choice([None, True, False]),
        phone_controlled=rare(),
    )
    body["indicators"] = {
        "exploitation_types": some("ExploitationType", 2),
        "control_methods": some("ControlMethod"),
        "recruitment": some("Recruitment", 2),
        "sectors": some("Sector", 2),
    }
    body["health"] = {
        "injury_severity": rng.choice(_values("InjurySeverity")),
        "hours_since_sexual_violence": rng.choice([None, None, rng.randint(1, 200)]),
        "sti_symptoms": rare(),
        "mining_exposure": rare(),
    }
    body["mental_health"] = {
        "suicidal": rng.choice(["none", "none", "ideation", "plan"]),
        "acute_distress": rare(),
        "positive_screen": rng.random() < 0.5,
    }
    body["legal"].update(
        documents_withheld=rare(),
        unpaid_wages=rare(),
        wants_police_report=rng.random() < 0.3,
    )
    body["needs_expressed"] = some("Need")
    return body


# --- the run --------------------------------------------------------------------------------


def _bench_directory(path: Path, partner_url: str) -> Path:
    """The demo directory, every endpoint at the loopback partner, room for every referral."""
    document = yaml.safe_load((ROOT / "app/partners/demo/directory.yaml").read_text())
    for partner in document["partners"]:
        if partner.get("endpoint"):
            partner["endpoint"]["url"] = f"{partner_url}/{partner['id']}"
        partner["capacity"] = {"available": 100_000, "maximum": 100_000}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _env(database_url: str, directory: Path, secrets_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUTA_")}
    env.update(
        {
            "RUTA_ENV": "development",  # loopback http partners
            "RUTA_DATABASE_URL": database_url,
            "RUTA_PARTNERS_PATH": str(directory),
            "RUTA_RATE_LIMIT_BACKEND": "off",
            "RUTA_LOG_LEVEL": "WARNING",
            "RUTA_EMBEDDED_WORKER": "false",
            "RUTA_PUBLIC_BASE_URL": "http://127.0.0.1:9",
            **secrets_env,
        }
    )
    return env


async def _post_share(count: int, seed: int, key: str) -> int:
    """Run in a child process: post ``count`` screenings in batches; return those stored."""
    import httpx

    from app.main import create_app
    from app.settings import Settings

    app = create_app(Settings())
    rng = random.Random(seed)
    start = datetime(2026, 6, 1, tzinfo=UTC)
    stored = 0
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://ruta.bench", timeout=120
        ) as http:
            for offset in range(0, count, BATCH):
                items = [
                    varied_screening(rng, start + timedelta(minutes=rng.randint(0, 250_000)))
                    for _ in range(min(BATCH, count - offset))
                ]
                response = await http.post(
                    "/v1/screenings/batch", json={"screenings": items}, headers=headers
                )
                response.raise_for_status()
                answer = response.json()
                if answer.get("failed"):
                    bad = [r for r in answer["results"] if r.get("status") not in ("created",)]
                    raise RuntimeError(f"batch items failed: {json.dumps(bad[:2])[:2000]}")
                stored += len(items)
    return stored


async def _create_key() -> str:
    from app.settings import Settings
    from bench.delivery import _create_key as create

    return await create(Settings())


async def _scalar(url: str, query: str) -> Any:
    import asyncpg

    conn = await asyncpg.connect(_dsn(url))
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _relations(url: str) -> dict[str, tuple[str, int]]:
    """Every heap (with its TOAST) and index as stored: name -> (table, bytes)."""
    import asyncpg

    conn = await asyncpg.connect(_dsn(url))
    try:
        rows = await conn.fetch(
            "SELECT c.relname AS name, c.relname AS tab, "
            "pg_table_size(c.oid) AS size FROM pg_class c "
            "WHERE c.relkind = 'r' AND c.relnamespace = current_schema()::regnamespace "
            "UNION ALL SELECT i.relname, t.relname, pg_relation_size(i.oid) "
            "FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
            "JOIN pg_class t ON t.oid = x.indrelid "
            "WHERE t.relnamespace = current_schema()::regnamespace"
        )
    finally:
        await conn.close()
    return {row["name"]: (row["tab"], int(row["size"])) for row in rows}


async def _autovacuum_round(url: str) -> list[str]:
    """What autovacuum's defaults would vacuum now (PostgreSQL 13+ thresholds); vacuumed."""
    import asyncpg

    conn = await asyncpg.connect(_dsn(url))
    try:
        due = await conn.fetch(
            "SELECT s.relname FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid "
            "WHERE s.n_dead_tup > 50 + 0.2 * greatest(c.reltuples, 0) "
            "OR s.n_ins_since_vacuum > 1000 + 0.2 * greatest(c.reltuples, 0)"
        )
        for row in due:
            await conn.execute(f'VACUUM "{row["relname"]}"')
    finally:
        await conn.close()
    return [row["relname"] for row in due]


@contextmanager
def _autovacuum(url: str) -> Iterator[list[int]]:
    """While the run lasts, vacuum every minute as autovacuum would, if the server's is
    off; yields a one-item list: the number of tables vacuumed so far."""
    import threading

    vacuumed = [0]
    if asyncio.run(_scalar(url, "SHOW autovacuum")) == "on":
        yield vacuumed
        return
    print("autovacuum is off on this server: the bench vacuums as it would", flush=True)
    stop = threading.Event()

    def loop() -> None:
        import asyncpg

        while not stop.wait(60):
            try:
                vacuumed[0] += len(asyncio.run(_autovacuum_round(url)))
            except (OSError, asyncpg.PostgresError) as exc:
                print(f"vacuum round failed ({type(exc).__name__}); next minute", flush=True)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield vacuumed
    finally:
        stop.set()
        thread.join()


async def _sizes(url: str, full: bool = False) -> dict[str, int]:
    """Every table's total size (heap, TOAST, indexes) after ``VACUUM ANALYZE``, or after
    ``VACUUM FULL`` (the live rows alone, files rewritten) with ``full``."""
    import asyncpg

    conn = await asyncpg.connect(_dsn(url))
    try:
        await conn.execute("VACUUM FULL ANALYZE" if full else "VACUUM ANALYZE")
        rows = await conn.fetch(
            "SELECT tablename, pg_total_relation_size(quote_ident(tablename)) AS size "
            "FROM pg_tables WHERE schemaname = current_schema()"
        )
    finally:
        await conn.close()
    return {row["tablename"]: int(row["size"]) for row in rows}


def _pending(url: str) -> int:
    """Deliveries still pending; a failed look (e.g. the server's connections all in use
    by other clients of a shared machine) counts as pending, and the bench looks again."""
    import asyncpg

    query = "SELECT count(*) FROM deliveries WHERE status = 'pending'"
    try:
        return int(asyncio.run(_scalar(url, query)))
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"could not count pending deliveries ({type(exc).__name__}); again", flush=True)
        return -1


def _post(env: dict[str, str], screenings: int, processes: int, key: str, seed: int) -> int:
    """Post in ``processes`` child processes; the screenings stored."""
    shares = [screenings // processes + (i < screenings % processes) for i in range(processes)]
    children = [
        subprocess.Popen(
            [PYTHON, "-m", "bench.storage", "--child", str(n), str(seed + i), key],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i, n in enumerate(shares)
    ]
    stored = 0
    for child in children:
        out, _ = child.communicate()
        if child.returncode:
            raise RuntimeError("a posting process failed")
        stored += int(out.strip().splitlines()[-1])
    return stored


def _child(argv: list[str]) -> int:
    count, seed, key = int(argv[0]), int(argv[1]), argv[2]
    print(asyncio.run(_post_share(count, seed, key)))
    return 0


def run(
    screenings: int,
    server_url: str,
    processes: int,
    keep: bool,
    seed: int,
    workers: int = 2,
    concurrency: int = 20,
) -> dict[str, Any]:
    """Post while ``workers`` ``ruta worker`` processes deliver (as in production:
    autovacuum reuses the space updates free), wait for the outbox to drain, measure."""
    from app.migrations import upgrade

    name = f"ruta_bench_storage_{secrets.token_hex(3)}"
    url = (
        make_url(server_url)
        .set(drivername="postgresql+asyncpg", database=name)
        .render_as_string(hide_password=False)
    )
    asyncio.run(_scalar(server_url, f'CREATE DATABASE "{name}"'))
    try:
        upgrade(url)
        with tempfile.TemporaryDirectory() as tmp, _partner() as partner_url:
            env = _env(url, _bench_directory(Path(tmp) / "partners.yaml", partner_url), {})
            env.update(_fresh_secrets())
            os.environ.update(env)
            key = asyncio.run(_create_key())
            started = time.monotonic()
            with ExitStack() as stack:
                vacuumed = stack.enter_context(_autovacuum(url))
                for _ in range(workers):
                    worker = [RUTA, "worker", "--concurrency", str(concurrency)]
                    stack.enter_context(_process(worker, env))
                stored = _post(env, screenings, processes, key, seed)
                posted_seconds = time.monotonic() - started
                while _pending(url) and time.monotonic() - started < 7200:
                    time.sleep(2)
            drained_seconds = time.monotonic() - started
        delivered = asyncio.run(
            _scalar(url, "SELECT count(*) FROM deliveries WHERE status = 'delivered'")
        )
        sizes = asyncio.run(_sizes(url))
        relations = asyncio.run(_relations(url))
        counts = {
            table: int(asyncio.run(_scalar(url, f"SELECT count(*) FROM {table}")))  # noqa: S608
            for table in ("screenings", "decisions", "referrals", "deliveries", "audit_events")
        }
        compacted = asyncio.run(_sizes(url, full=True))
    finally:
        if not keep:
            asyncio.run(_scalar(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    return {
        "database": name if keep else None,
        "screenings": stored,
        "post_seconds": posted_seconds,
        "delivered": int(delivered),
        "delivery_seconds": drained_seconds,
        "rows": counts,
        "sizes": sizes,
        "relations": relations,
        "compacted": compacted,
        "vacuums": vacuumed[0],
        "workers": workers,
        "concurrency": concurrency,
    }


def _fresh_secrets() -> dict[str, str]:
    from bench.intake import fresh_secrets

    return fresh_secrets()


@contextmanager
def _partner() -> Iterator[str]:
    from bench.delivery import _wait_http, free_port

    port = free_port()
    cmd = [PYTHON, "-m", "uvicorn", "bench.storage:partner_app", "--port", str(port)]
    cmd += ["--log-level", "warning", "--no-access-log"]
    with _process(cmd):
        _wait_http(f"http://127.0.0.1:{port}/", timeout=30)
        yield f"http://127.0.0.1:{port}"


def report(result: dict[str, Any]) -> bool:
    n = int(result["screenings"])
    print(
        f"{n} screenings posted in {result['post_seconds']:.0f} s; "
        f"{result['delivered']} deliveries delivered, outbox drained at "
        f"{result['delivery_seconds']:.0f} s"
    )
    print(
        f"{result['workers']} workers, --concurrency {result['concurrency']}; "
        f"{result['vacuums']} tables vacuumed during the run"
    )
    print("rows: " + ", ".join(f"{t} {c}" for t, c in result["rows"].items()))
    sizes, compacted = result["sizes"], result["compacted"]
    print(f"\n{'table':<26}{'MB':>8}{'bytes/screening':>17}{'after VACUUM FULL':>19}")
    for table, size in sorted(sizes.items(), key=lambda kv: -kv[1]):
        print(f"{table:<26}{size / 1e6:>8.1f}{size / n:>17.0f}{compacted[table] / n:>19.0f}")
    print(f"\n{'as stored: heap and each index':<48}{'bytes/screening':>17}")
    for name, (table, size) in sorted(result["relations"].items(), key=lambda kv: -kv[1][1]):
        if size / n >= 10:
            print(f"{table + ' ' + ('(heap)' if name == table else name):<48}{size / n:>17.0f}")
    total, total_full = sum(sizes.values()), sum(compacted.values())
    print(f"{'total':<26}{total / 1e6:>8.1f}{total / n:>17.0f}{total_full / n:>19.0f}")
    ok: bool = total / n <= TARGET_BYTES
    print(
        f"\n{'PASS' if ok else 'FAIL'}: {total / n / 1024:.2f} KiB per screening as stored "
        f"({total_full / n / 1024:.2f} KiB after VACUUM FULL); target ≤ 12 KiB"
    )
    return ok


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        return _child(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--screenings", type=int, default=2000)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_SERVER),
        help="a PostgreSQL server (its database is only used to create and drop the bench's)",
    )
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="ruta worker processes")
    parser.add_argument(
        "--concurrency", type=int, default=20, help="each worker's deliveries in flight"
    )
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--seed", type=int, default=None, help="vary the screenings (random)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else secrets.randbelow(1_000_000)
    print(f"seed {seed}", flush=True)
    result = run(
        args.screenings,
        args.database_url,
        args.processes,
        args.keep,
        seed,
        args.workers,
        args.concurrency,
    )
    if result["database"]:
        print(f"database kept: {result['database']}")
    return 0 if report(result) else 1


if __name__ == "__main__":
    sys.exit(main())
