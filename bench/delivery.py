"""Delivery: deliveries per second from one worker, and how fast an emergency reaches a partner.

    python -m bench.delivery [--deliveries 400] [--emergencies 40] [--postgres-url URL]

(a) Throughput. N deliveries are queued through the real intake path (screenings posted
    in-process, one partner offering every service, embedded worker off); then ONE
    ``ruta worker`` process delivers them to a fast partner on loopback (a separate uvicorn
    process that answers 200 at once). Deliveries per second are counted from the worker's
    own records: first attempt started to last delivery finished.
(b) Emergency latency under load. ``ruta serve`` runs as a subprocess with its embedded
    worker; a background stream of non-emergency screenings is posted over HTTP at a fixed
    rate (``--background`` per second) while, one at a time, screenings that decide an
    emergency referral are posted. Latency is from
    just before ``POST /v1/screenings`` to the partner receiving the emergency referral.
    With ``--saturating-clients N`` it is measured once more on PostgreSQL while N wrk
    connections post routine screenings back to back (the intake benchmark's load, in its
    own process), with the worker as its own ``ruta worker`` process.

Both run on SQLite, and on PostgreSQL when ``--postgres-url``/``BENCH_POSTGRES_URL`` (an
admin URL; a database is created and dropped) is given or a local server answers at
127.0.0.1:5432. Resident memory of the worker, server and partner processes is reported.
Import :func:`run_delivery_bench` to get the results as a dict; ``main`` prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.schemas.examples import EXAMPLE_SCREENING
from bench import cpu as cpu_split
from bench.intake import fresh_secrets, write_wrk_script, wrk_non_2xx

PYTHON = sys.executable
RUTA = str(Path(PYTHON).with_name("ruta"))
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"

# --- the fast partner (its own process: python -m uvicorn bench.delivery:partner_app) ----

_arrivals: dict[str, float] = {}
_count = 0


async def _inbox(request: Request) -> Response:
    global _count
    body = await request.body()
    _count += 1
    try:
        referral = json.loads(body).get("referral", {})
        if referral.get("urgency") == "emergency":
            _arrivals[str(referral.get("id"))] = time.time()
    except ValueError:
        pass
    return Response(status_code=200)


async def _arrivals_view(_request: Request) -> Response:
    return JSONResponse({"count": _count, "emergencies": _arrivals})


partner_app = Starlette(
    routes=[
        Route("/inbox", _inbox, methods=["POST"]),
        Route("/arrivals", _arrivals_view, methods=["GET"]),
    ]
)

# --- helpers -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its direct children, in MiB."""
    pids = [pid]
    with suppress(OSError):
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def _wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


@contextmanager
def _process(
    cmd: list[str], env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def partner_process() -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    cmd = [PYTHON, "-m", "uvicorn", "bench.delivery:partner_app", "--port", str(port)]
    cmd += ["--log-level", "warning", "--no-access-log"]
    with _process(cmd) as proc:
        _wait_http(f"http://127.0.0.1:{port}/arrivals")
        yield proc, f"http://127.0.0.1:{port}"


def ruta_env(database_url: str, partners_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUTA_")}
    env.update(
        {
            # Development: the partner is plain http on loopback, which production refuses.
            "RUTA_ENV": "development",
            "RUTA_DATABASE_URL": database_url,
            **fresh_secrets(),
            "RUTA_PARTNERS_PATH": str(partners_path),
            "RUTA_RATE_LIMIT_BACKEND": "off",
            "RUTA_LOG_LEVEL": "WARNING",
        }
    )
    env.update(extra)
    return env


#: One partner per service, each with the role that takes an adult's referral of it
#: (docs/partners.md, "Partner roles"); every one of them is the one fast partner process.
ROLES = {
    "medical": "health_facility",
    "psychological": "psychosocial",
    "legal": "legal_aid",
    "protection": "shelter",
}


def write_directory(path: Path, partner_url: str) -> None:
    partners = [
        {
            "id": f"bench-{service}",
            "organisation": {"id": "bench-org", "name": "Bench partner (invented)"},
            "name": f"Bench {service} partner",
            "services": [service],
            "role": role,
            "service_area": {"national": True},
            "languages": ["es", "qu"],
            "capacity": {"available": 100000, "maximum": 100000},
            "hours": {"always_open": True},
            "endpoint": {"url": f"{partner_url}/inbox"},
        }
        for service, role in ROLES.items()
    ]
    path.write_text(json.dumps({"version": 1, "partners": partners}))


def _screening(*, emergency: bool) -> dict[str, Any]:
    """An adult who consents to everything. The emergency one is in immediate danger with
    sexual violence 30 hours ago (protection and medical emergencies); the other has no
    emergency: routine and urgent referrals only."""
    body: dict[str, Any] = json.loads(json.dumps(EXAMPLE_SCREENING))
    body["id"] = str(uuid.uuid4())
    body["subject"].update(
        {"age": 27, "age_estimated": False, "unaccompanied_minor": False},
        case_code=f"BENCH-{secrets.token_hex(4)}",
    )
    body["consent"]["scopes"] = ["medical", "psychological", "legal", "protection"]
    if emergency:
        body["safety"]["immediate_danger"] = True
    else:
        body["safety"].update({"trafficker_nearby": False, "can_return_safely": True})
        body["health"].pop("hours_since_sexual_violence", None)
        body["mental_health"] = {"suicidal": "none", "positive_screen": True}
    return body


async def _create_key(settings: Any) -> str:
    from app import audit
    from app.auth import create_client
    from app.db import create_engine, create_sessionmaker
    from app.models import Role

    engine = create_engine(settings.database_url)
    try:
        maker = create_sessionmaker(engine)
        audit.configure_sessionmaker(maker, settings)
        async with maker() as session:
            _client, key = await create_client(
                session,
                secret_key=settings.secret_key.get_secret_value().encode(),
                name="bench",
                role=Role.clinic,
                organisation="Caravana de la Vida",
                actor=audit.system("bench"),
            )
            await session.commit()
        return key
    finally:
        await engine.dispose()


def _settings(env: dict[str, str]) -> Any:
    from app.settings import Settings

    values = {k[len("RUTA_") :].lower(): v for k, v in env.items() if k.startswith("RUTA_")}
    return Settings.model_validate(values)


# --- databases -----------------------------------------------------------------------------


async def _admin(admin_url: str, statement: str) -> None:
    import asyncpg

    u = make_url(admin_url)
    conn = await asyncpg.connect(
        host=u.host or "127.0.0.1",
        port=u.port or 5432,
        user=u.username or "postgres",
        password=u.password,
        database=u.database or "postgres",
    )
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


class Database:
    """A fresh, migrated database for one measurement; dropped afterwards."""

    def __init__(self, engine: str, workdir: Path, admin_url: str | None) -> None:
        self.engine = engine
        self.admin_url = admin_url
        self.name = f"ruta_bench_delivery_{os.getpid()}_{secrets.token_hex(3)}"
        if engine == "sqlite":
            self.url = f"sqlite+aiosqlite:///{workdir / (self.name + '.db')}"
        else:
            assert admin_url is not None
            u = make_url(admin_url).set(drivername="postgresql+asyncpg", database=self.name)
            self.url = u.render_as_string(hide_password=False)

    async def __aenter__(self) -> Database:
        from app.migrations import upgrade

        if self.admin_url is not None and self.engine == "postgresql":
            await _admin(self.admin_url, f'CREATE DATABASE "{self.name}"')
        await asyncio.to_thread(upgrade, self.url)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self.admin_url is not None and self.engine == "postgresql":
            await _admin(self.admin_url, f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


async def postgres_available(admin_url: str) -> bool:
    try:
        await asyncio.wait_for(_admin(admin_url, "SELECT 1"), 5)
    except Exception:
        return False
    return True


# --- (a) throughput ------------------------------------------------------------------------


async def _seed(env: dict[str, str], deliveries: int) -> int:
    """Queue deliveries through the real intake path, in-process, no worker running."""
    from app.main import create_app

    settings = _settings({**env, "RUTA_EMBEDDED_WORKER": "false"})
    key = await _create_key(settings)
    app = create_app(settings)
    queued = 0
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://ruta.bench") as http:
            while queued < deliveries:
                response = await http.post(
                    "/v1/screenings", json=_screening(emergency=False), headers=headers
                )
                response.raise_for_status()
                referrals = response.json()["decision"]["referrals"]
                queued += sum(1 for r in referrals if r.get("partner"))
    return queued


@asynccontextmanager
async def _connect(database_url: str) -> AsyncIterator[AsyncConnection]:
    """One connection to the benchmark's database, its engine disposed afterwards."""
    from app.db import create_engine

    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            yield conn
    finally:
        await engine.dispose()


async def _delivery_stats(database_url: str) -> dict[str, Any]:
    from app.models import Delivery, DeliveryAttempt

    async with _connect(database_url) as conn:
        pending = await conn.scalar(
            select(func.count()).select_from(Delivery).where(Delivery.status == "pending")
        )
        delivered = await conn.scalar(
            select(func.count()).select_from(Delivery).where(Delivery.status == "delivered")
        )
        first = await conn.scalar(select(func.min(DeliveryAttempt.started_at)))
        last = await conn.scalar(select(func.max(Delivery.finished_at)))
        attempts = await conn.scalar(select(func.count()).select_from(DeliveryAttempt))
    return {
        "pending": int(pending or 0),
        "delivered": int(delivered or 0),
        "attempts": int(attempts or 0),
        "first": first,
        "last": last,
    }


async def throughput(engine: str, deliveries: int, admin_url: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, partner_process() as (partner, partner_url):
        workdir = Path(tmp)
        directory = workdir / "partners.json"
        write_directory(directory, partner_url)
        async with Database(engine, workdir, admin_url) as db:
            env = ruta_env(db.url, directory)
            queued = await _seed(env, deliveries)
            worker_env = {**env, "RUTA_EMBEDDED_WORKER": "false"}
            peak_rss = 0.0
            started = time.monotonic()
            with _process([RUTA, "worker", "--concurrency", "10"], worker_env) as worker:
                stats = await _delivery_stats(db.url)
                while stats["pending"] and time.monotonic() - started < 600:
                    await asyncio.sleep(0.5)
                    peak_rss = max(peak_rss, rss_mib(worker.pid))
                    stats = await _delivery_stats(db.url)
                worker_cpu = cpu_split.cpu_seconds(worker.pid) or float("nan")
            partner_rss = rss_mib(partner.pid)
    seconds = (stats["last"] - stats["first"]).total_seconds() if stats["last"] else float("nan")
    return {
        "engine": engine,
        "queued": queued,
        "delivered": stats["delivered"],
        "attempts": stats["attempts"],
        "seconds": seconds,
        "deliveries_per_second": stats["delivered"] / seconds if seconds else float("nan"),
        "worker_rss_mib": peak_rss,
        "partner_rss_mib": partner_rss,
        # The worker's whole CPU (start-up included) per delivery it made.
        "worker_cpu_ms_per_delivery": worker_cpu / max(stats["delivered"], 1) * 1000,
    }


# --- (b) emergency latency under load ------------------------------------------------------


def _wrk_load(base: str, key: str, clients: int) -> tuple[subprocess.Popen[str], Path]:
    """``clients`` wrk connections posting routine screenings (no emergency) back to back,
    until :func:`_stop_wrk_load`."""
    if shutil.which("wrk") is None:
        raise SystemExit("the saturating runs need wrk: apt-get install wrk")
    script = Path(write_wrk_script(key, _screening(emergency=False)))
    command = ["wrk", "-t1", f"-c{clients}", "-d3600s", "-s", str(script), base]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True), script


def _stop_wrk_load(process: subprocess.Popen[str], script: Path) -> dict[str, int]:
    """Stop wrk (it reports on SIGINT) and count what it had answered."""
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=30)
    script.unlink(missing_ok=True)
    done = re.search(r"(\d+) requests in", out)
    errors = wrk_non_2xx(out)
    return {"background": (int(done.group(1)) if done else 0) - errors, "errors": errors}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def latency(
    engine: str,
    emergencies: int,
    background: float,
    admin_url: str | None,
    clients: int = 0,
    api_processes: int = 1,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, partner_process() as (partner, partner_url):
        workdir = Path(tmp)
        directory = workdir / "partners.json"
        write_directory(directory, partner_url)
        async with Database(engine, workdir, admin_url) as db:
            port = free_port()
            # Under saturating load the worker runs as its own process, as in production
            # (docs/operations.md): in the API process it would queue behind intake.
            separate = clients > 0
            env = ruta_env(
                db.url,
                directory,
                RUTA_HOST="127.0.0.1",
                RUTA_PORT=str(port),
                RUTA_WORKERS=str(api_processes),
                RUTA_EMBEDDED_WORKER="false" if separate else "true",
            )
            key = await _create_key(_settings(env))
            with _process([RUTA, "serve"], env) as server, ExitStack() as stack:
                accounted = {"api": [server.pid], "partner": [partner.pid]}
                if separate:
                    accounted["worker"] = [stack.enter_context(_process([RUTA, "worker"], env)).pid]
                base = f"http://127.0.0.1:{port}"
                await asyncio.to_thread(_wait_http, f"{base}/healthz")
                result = await _measure_latency(
                    engine,
                    base,
                    key,
                    partner_url,
                    emergencies,
                    background,
                    server,
                    partner,
                    clients,
                    accounting=(accounted, db.url),
                )
                return {**result, "api_processes": api_processes}


async def _measure_latency(
    engine: str,
    base: str,
    key: str,
    partner_url: str,
    emergencies: int,
    background: float,
    server: subprocess.Popen[bytes],
    partner: subprocess.Popen[bytes],
    clients: int = 0,
    accounting: tuple[dict[str, list[int]], str] | None = None,
) -> dict[str, Any]:
    """With ``clients`` > 0 the background is that many closed-loop clients posting back to
    back instead of a fixed rate: wrk, as in bench/intake.py, in its own process. (Python
    clients in this process measured themselves: on a slow machine the 32 of them kept this
    process's event loop so busy that an emergency's answer waited here for seconds.)
    ``accounting`` (processes by role, and the database's URL): the CPU each role used while
    the emergencies were posted, per screening taken in that window (:mod:`bench.cpu`)."""
    headers = {"Authorization": f"Bearer {key}"}
    stop = asyncio.Event()
    posted = {"background": 0, "errors": 0}
    limits = httpx.Limits(max_connections=24)
    load = _wrk_load(base, key, clients) if clients > 0 else None
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:

        async def post_one() -> None:
            try:
                response = await http.post(
                    "/v1/screenings", json=_screening(emergency=False), headers=headers
                )
                posted["background" if response.status_code == 201 else "errors"] += 1
            except httpx.HTTPError:
                posted["errors"] += 1

        async def stream() -> None:
            """``background`` screenings a second, on a fixed schedule (at most 16 open)."""
            in_flight: set[asyncio.Task[None]] = set()
            next_at = time.monotonic()
            while not stop.is_set():
                next_at += 1 / background
                if len(in_flight) < 16:
                    task = asyncio.create_task(post_one())
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            await asyncio.gather(*in_flight, return_exceptions=True)

        streams = [] if clients > 0 else [asyncio.create_task(stream())]
        sent: dict[str, float] = {}
        #: When each emergency's POST was answered (to split its latency in two).
        answered_at: dict[str, float] = {}
        answered: list[float] = []
        peak_rss = 0.0
        try:
            await asyncio.sleep(2)  # the background load is on
            window = await _window(accounting, load, partner_url)
            for _ in range(emergencies):
                t0 = time.time()
                response = await http.post(
                    "/v1/screenings", json=_screening(emergency=True), headers=headers
                )
                response.raise_for_status()
                t1 = time.time()
                answered.append((t1 - t0) * 1000)
                for referral in response.json()["decision"]["referrals"]:
                    if referral["urgency"] == "emergency" and referral.get("partner"):
                        sent[referral["id"]] = t0
                        answered_at[referral["id"]] = t1
                peak_rss = max(peak_rss, rss_mib(server.pid))
                await asyncio.sleep(0.25)
            cpu = await _window_end(window, partner_url)
            deadline = time.monotonic() + 120
            arrived: dict[str, float] = {}
            async with httpx.AsyncClient(base_url=partner_url, timeout=10) as probe:
                while time.monotonic() < deadline:
                    arrived = (await probe.get("/arrivals")).json()["emergencies"]
                    if set(sent) <= set(arrived):
                        break
                    await asyncio.sleep(0.2)
                received = (await probe.get("/arrivals")).json()["count"]
        finally:
            stop.set()
            for task in streams:
                task.cancel()
            await asyncio.gather(*streams, return_exceptions=True)
            if load is not None:
                posted.update(await asyncio.to_thread(_stop_wrk_load, *load))
    latencies = [(arrived[rid] - t0) * 1000 for rid, t0 in sent.items() if rid in arrived]
    # After the POST was answered: the worker's part (wake, claim, sign, send), and the
    # partner's.
    after_post = [(arrived[rid] - answered_at[rid]) * 1000 for rid in sent if rid in arrived]
    return {
        "engine": engine,
        "emergency_referrals": len(sent),
        "arrived": len(latencies),
        "median_ms": statistics.median(latencies) if latencies else float("nan"),
        # Each emergency's, so that rounds can be pooled (bench.ab).
        "latencies_ms": latencies,
        "post_ms": answered,
        "after_post_ms": after_post,
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": max(latencies) if latencies else float("nan"),
        "post_median_ms": statistics.median(answered) if answered else float("nan"),
        "post_p99_ms": percentile(answered, 0.99),
        "after_post_median_ms": statistics.median(after_post) if after_post else float("nan"),
        "after_post_p99_ms": percentile(after_post, 0.99),
        "background_per_second": background if clients == 0 else None,
        "background_clients": clients,
        "worker": "ruta worker process" if clients > 0 else "embedded",
        "background_screenings": posted["background"],
        "background_errors": posted["errors"],
        "partner_received": received,
        "server_rss_mib": peak_rss,
        "partner_rss_mib": rss_mib(partner.pid),
        "cpu": cpu,
    }


@dataclass
class _Window:
    """The start of the measured window: CPU per process, screenings stored, deliveries
    received by the partner."""

    roots: dict[str, list[int]]
    database_url: str
    snapshot: cpu_split.Snapshot
    screenings: int
    received: int


async def _window(
    accounting: tuple[dict[str, list[int]], str] | None,
    load: tuple[subprocess.Popen[str], Path] | None,
    partner_url: str,
) -> _Window | None:
    if accounting is None:
        return None
    roots, database_url = accounting
    roots = {**roots, **({"wrk": [load[0].pid]} if load is not None else {})}
    return _Window(
        roots,
        database_url,
        cpu_split.Snapshot.take(roots),
        await _screenings_stored(database_url),
        await _received(partner_url),
    )


async def _window_end(window: _Window | None, partner_url: str) -> dict[str, Any] | None:
    """CPU seconds per role in the window, with the screenings and deliveries it saw."""
    if window is None:
        return None
    used = window.snapshot.used(cpu_split.Snapshot.take(window.roots))
    return {
        "seconds": used,
        "screenings": await _screenings_stored(window.database_url) - window.screenings,
        "delivered": await _received(partner_url) - window.received,
        "tables": await _table_activity(window.database_url),
    }


async def _table_activity(database_url: str) -> dict[str, dict[str, int]]:
    """PostgreSQL's counters per table since the database was made (scans, rows read and
    written, HOT updates): what the database did for the run, to compare two versions."""
    if not database_url.startswith("postgresql"):
        return {}
    from sqlalchemy import text

    columns = (
        "seq_scan, seq_tup_read, idx_scan, idx_tup_fetch, n_tup_ins, n_tup_upd, "
        "n_tup_hot_upd, n_tup_del, n_dead_tup"
    )
    async with _connect(database_url) as conn:
        rows = await conn.execute(
            text(f"SELECT relname, {columns} FROM pg_stat_user_tables ORDER BY relname")  # noqa: S608 (constants)
        )
        return {
            row[0]: {k: int(v or 0) for k, v in zip(columns.split(", "), row[1:], strict=True)}
            for row in rows
        }


async def _screenings_stored(database_url: str) -> int:
    from app.models import Screening

    async with _connect(database_url) as conn:
        return int(await conn.scalar(select(func.count()).select_from(Screening)) or 0)


async def _received(partner_url: str) -> int:
    async with httpx.AsyncClient(base_url=partner_url, timeout=10) as probe:
        return int((await probe.get("/arrivals")).json()["count"])


# --- entry points --------------------------------------------------------------------------


async def run_delivery_bench(
    *,
    deliveries: int = 400,
    emergencies: int = 40,
    background: float = 5,
    postgres_url: str | None = None,
    saturating_clients: int = 0,
    saturating_api_processes: tuple[int, ...] = (1,),
    only_saturated: bool = False,
) -> dict[str, Any]:
    """Run (a) and (b) on SQLite, and on PostgreSQL when it is reachable; with
    ``saturating_clients``, (b) once more on PostgreSQL under that many closed-loop
    clients, for each number of API processes in ``saturating_api_processes``
    (``only_saturated``: that alone, as ``bench.ab`` runs it)."""
    admin = postgres_url or os.environ.get("BENCH_POSTGRES_URL") or DEFAULT_POSTGRES
    engines = ["sqlite"]
    if await postgres_available(admin):
        engines.append("postgresql")
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "throughput": [],
        "latency": [],
        "skipped": [] if "postgresql" in engines else ["postgresql: not reachable"],
    }
    for engine in engines if not only_saturated else ():
        print(f"  throughput on {engine}: {deliveries} deliveries, one worker…", flush=True)
        results["throughput"].append(await throughput(engine, deliveries, admin))
        print(f"  emergency latency on {engine}: {emergencies} emergencies…", flush=True)
        results["latency"].append(await latency(engine, emergencies, background, admin))
    for processes in saturating_api_processes if saturating_clients else ():
        if "postgresql" not in engines:
            break
        print(
            f"  emergency latency on postgresql under {saturating_clients} saturating clients, "
            f"{processes} API process(es)…",
            flush=True,
        )
        results["latency"].append(
            await latency(
                "postgresql",
                emergencies,
                0,
                admin,
                clients=saturating_clients,
                api_processes=processes,
            )
        )
    return results


def _load(result: dict[str, Any]) -> str:
    if result.get("background_clients"):
        return f"{result['background_clients']} cl/{result.get('api_processes', 1)}p"
    return f"{result['background_per_second']:.1f}/s"


def print_table(results: dict[str, Any]) -> None:
    print("\n(a) one worker, fast partner on loopback")
    print(
        f"  {'engine':<11} {'delivered':>9} {'seconds':>8} {'per s':>8} {'worker RSS':>11} "
        f"{'worker CPU':>14}"
    )
    for r in results["throughput"]:
        print(
            f"  {r['engine']:<11} {r['delivered']:>9} {r['seconds']:>8.1f} "
            f"{r['deliveries_per_second']:>8.1f} {r['worker_rss_mib']:>8.0f} MiB "
            f"{r['worker_cpu_ms_per_delivery']:>5.2f} ms/each"
        )
    print("\n(b) POST /v1/screenings -> partner has the emergency, under background load")
    print(
        f"  {'engine':<11} {'n':>4} {'median':>9} {'p99':>9} {'max':>9} {'POST p50':>9} "
        f"{'load':>9} {'bg done':>7} {'server RSS':>11}"
    )
    for r in results["latency"]:
        print(
            f"  {r['engine']:<11} {r['arrived']:>4} {r['median_ms']:>6.0f} ms "
            f"{r['p99_ms']:>6.0f} ms {r['max_ms']:>6.0f} ms {r['post_median_ms']:>6.0f} ms "
            f"{_load(r):>9} {r['background_screenings']:>7} "
            f"{r['server_rss_mib']:>8.0f} MiB"
        )
    print("  split: POST answered (p50 / p99), then POST answered -> partner (p50 / p99)")
    for r in results["latency"]:
        print(
            f"  {r['engine']:<11} {_load(r):>9}  POST {r['post_median_ms']:>6.0f} / "
            f"{r['post_p99_ms']:>6.0f} ms   after {r['after_post_median_ms']:>6.0f} / "
            f"{r['after_post_p99_ms']:>6.0f} ms"
        )
    print_cpu(results["latency"])
    for note in results["skipped"]:
        print(f"  skipped {note}")


def print_cpu(runs: list[dict[str, Any]]) -> None:
    """Each saturated run's CPU split: cores each role kept busy, and CPU ms per screening."""
    for r in runs:
        cpu = r.get("cpu")
        if not cpu or not cpu["screenings"]:
            continue
        seconds, n = cpu["seconds"], cpu["screenings"]
        wall = seconds["wall"]
        print(
            f"  CPU while the emergencies were posted ({_load(r)}, {wall:.1f} s, {n} screenings, "
            f"{cpu['delivered']} deliveries): cores busy, then ms per screening"
        )
        for role in sorted(k for k in seconds if k != "wall"):
            used = seconds[role]
            print(f"    {role:<9} {used / wall:>5.2f} cores {used / n * 1000:>7.2f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--deliveries", type=int, default=400)
    parser.add_argument("--emergencies", type=int, default=40)
    parser.add_argument(
        "--background", type=float, default=5, help="background screenings per second"
    )
    parser.add_argument(
        "--saturating-clients",
        type=int,
        default=0,
        help="also measure (b) on PostgreSQL under this many back-to-back clients",
    )
    parser.add_argument(
        "--saturating-api-processes",
        type=int,
        nargs="+",
        default=[1],
        help="API processes (RUTA_WORKERS) for the saturated runs, one run each (default 1)",
    )
    parser.add_argument(
        "--only-saturated",
        action="store_true",
        help="measure only the saturated runs of (b) (needs --saturating-clients)",
    )
    parser.add_argument("--postgres-url", default=None)
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args(argv)
    print("delivery benchmark", flush=True)
    results = asyncio.run(
        run_delivery_bench(
            deliveries=args.deliveries,
            emergencies=args.emergencies,
            background=args.background,
            postgres_url=args.postgres_url,
            saturating_clients=args.saturating_clients,
            saturating_api_processes=tuple(args.saturating_api_processes),
            only_saturated=args.only_saturated,
        )
    )
    print_table(results)
    if args.output is not None:
        args.output.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
