"""`ruta serve` as real processes: the metrics of several server processes, where its
deliveries go when two instances share a machine, and a start that fails.

Each server runs on a free loopback port and is stopped at the end; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import func, select

from app.db import create_engine, create_sessionmaker
from app.models import Base, Delivery, PartnerRow
from tests.cli.test_commands import RUTA, environment
from tests.cli.test_serve import START_SECONDS, Process, start, wait_until

ROOT = Path(__file__).resolve().parents[2]
SCREENING = ROOT / "docs" / "examples" / "screening.json"


def healthy(process: Process) -> bool:
    try:
        return httpx.get(f"{process.url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def servers() -> Iterator[list[Process]]:
    """Processes a test started; each is stopped at the end."""
    started: list[Process] = []
    yield started
    for process in started:
        process.stop()


# --- metrics with two server processes ------------------------------------------------------

WORK_ROUTE = 'ruta_http_requests_total{method="GET",route="/readyz",status="200"}'


def scraped(process: Process) -> float:
    """The /readyz count in one scrape, on a new connection (either process may answer)."""
    with httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        text = client.get(f"{process.url}/metrics").text
    for line in text.splitlines():
        if line.startswith(WORK_ROUTE):
            return float(line.split()[-1])
    return 0.0


async def work(process: Process, count: int) -> None:
    """``count`` requests at once, each on its own connection, so both processes take some."""
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=process.url, timeout=10, limits=limits) as client:
        answers = await asyncio.gather(*(client.get("/readyz") for _ in range(count)))
    assert {a.status_code for a in answers} == {200}


def counted_by_each_process(directory: Path, tmp_path: Path) -> dict[str, float]:
    """The /readyz count each process wrote to its own file."""
    counts: dict[str, float] = {}
    for path in sorted(directory.glob("counter_*.db")):
        alone = tmp_path / f"alone-{path.stem}"
        alone.mkdir(parents=True)
        shutil.copy(path, alone / path.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))  # type: ignore[no-untyped-call]
        counts[path.stem.rsplit("_", 1)[1]] = sum(
            sample.value
            for metric in registry.collect()
            for sample in metric.samples
            if sample.name == "ruta_http_requests_total"
            and sample.labels.get("route") == "/readyz"
            and sample.labels.get("status") == "200"
        )
    return counts


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_two_server_processes_count_together_and_never_backwards(
    tmp_path: Path, database_url: str, servers: list[Process]
) -> None:
    """Before, each scrape read the registry of whichever process answered it: the counter
    jumped between one process's count and the other's."""
    directory = tmp_path / "metrics"
    env = {"RUTA_WORKERS": "2", "PROMETHEUS_MULTIPROC_DIR": str(directory)}

    # A first run leaves its files behind; the next `ruta serve` must not add them up.
    first = start(tmp_path, database_url, "serve", env=env)
    servers.append(first)
    wait_until(lambda: healthy(first), first, "answer on /healthz")
    asyncio.run(work(first, 10))
    first.stop()
    assert list(directory.glob("counter_*.db"))

    process = start(tmp_path, database_url, "serve", env=env)
    servers.append(process)
    wait_until(lambda: healthy(process), process, "answer on /healthz")
    done = 0
    for _ in range(10):  # bounded: until both processes have served some
        asyncio.run(work(process, 20))
        done += 20
        per_process = counted_by_each_process(directory, tmp_path / f"after-{done}")
        if len([n for n in per_process.values() if n > 0]) >= 2:
            break
    assert len([n for n in per_process.values() if n > 0]) >= 2, per_process
    assert sum(per_process.values()) == done

    seen = []
    for _ in range(8):
        seen.append(scraped(process))
        asyncio.run(work(process, 3))
        done += 3
    # Every scrape is the sum of both processes' work so far: never lower than the last.
    assert seen == sorted(seen), seen
    assert seen[0] == done - 8 * 3
    assert seen[-1] == done - 3
    assert scraped(process) == done


# --- two instances on one machine -----------------------------------------------------------


def demo_keys(tmp_path: Path, database_url: str, name: str) -> dict[str, str]:
    keys_file = tmp_path / f"{name}-keys.env"
    result = subprocess.run(
        [RUTA, "demo", "--keys-file", str(keys_file)],
        env=environment(database_url, RUTA_ENV="development"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return dict(line.split("=", 1) for line in keys_file.read_text().splitlines())


async def stored(database_url: str) -> tuple[dict[str, str], dict[str, str]]:
    """The demo partners' endpoints (console-only partners have none), and each delivered
    delivery's partner by webhook-id."""
    engine = create_engine(database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            rows = await session.execute(
                select(PartnerRow.id, PartnerRow.endpoint_url).where(
                    PartnerRow.endpoint_url.is_not(None)
                )
            )
            endpoints = {pid: str(url) for pid, url in rows.all()}
            sent = await session.execute(select(Delivery).where(Delivery.status == "delivered"))
            delivered = {d.webhook_id: d.partner_id for d in sent.scalars()}
    finally:
        await engine.dispose()
    return endpoints, delivered


def inbox(process: Process, admin: str, partner_id: str) -> list[str]:
    response = httpx.get(
        f"{process.url}/demo/partners/{partner_id}/inbox",
        headers={"Authorization": f"Bearer {admin}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return [item["webhook_id"] for item in response.json()["items"]]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_two_instances_on_one_machine_deliver_only_to_themselves(
    tmp_path: Path, database_url: str, sqlite_template: Path, servers: list[Process]
) -> None:
    """Without RUTA_PUBLIC_BASE_URL, `ruta serve --port N` sent its demo deliveries to :8000,
    so one instance's referrals of a minor reached another's inboxes."""
    other = tmp_path / "other.db"
    shutil.copyfile(sqlite_template, other)
    urls = [database_url, f"sqlite+aiosqlite:///{other}"]
    keys = [demo_keys(tmp_path, url, f"instance-{n}") for n, url in enumerate(urls)]
    development = {"RUTA_ENV": "development", "RUTA_EMBEDDED_WORKER": "true"}
    instances = [start(tmp_path, url, "serve", env=development) for url in urls]
    servers.extend(instances)
    for process in instances:
        wait_until(lambda p=process: healthy(p), process, "answer on /healthz")
        response = httpx.post(
            f"{process.url}/v1/screenings",
            content=SCREENING.read_bytes(),
            headers={
                "Authorization": f"Bearer {keys[instances.index(process)]['RUTA_CLINIC_KEY']}",
                "Content-Type": "application/json",
            },
            timeout=30,
        )
        assert response.status_code == 201, response.text
    deadline = time.monotonic() + START_SECONDS
    while True:
        found = [asyncio.run(stored(url)) for url in urls]
        if all(len(delivered) >= 3 for _, delivered in found) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for process, (endpoints, delivered), key in zip(instances, found, keys, strict=True):
        assert len(delivered) >= 3, (delivered, process.lines()[-5:])
        # Its demo partners' endpoints are its own address...
        assert all(url.startswith(f"{process.url}/demo/") for url in endpoints.values())
        # ...and its inboxes hold what it delivered over HTTP, and nothing from the other
        # instance (a console-only partner's referrals wait in the console, not in an inbox).
        over_http = {hook: pid for hook, pid in delivered.items() if pid in endpoints}
        assert over_http, delivered
        received = {
            webhook_id
            for partner_id in set(over_http.values())
            for webhook_id in inbox(process, key["RUTA_ADMIN_KEY"], partner_id)
        }
        assert received == set(over_http)
    first, second = (set(delivered) for _, delivered in found)
    assert not first & second


# --- a start that fails changes nothing -----------------------------------------------------


async def snapshot(database_url: str) -> dict[str, Any]:
    """Every table's rows, as text: what a failed start must leave exactly as it was."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            tables: dict[str, Any] = {}
            for table in Base.metadata.sorted_tables:
                count = (await conn.execute(select(func.count()).select_from(table))).scalar()
                rows = (await conn.execute(select(table))).all()
                tables[table.name] = (count, sorted(json.dumps(list(r), default=str) for r in rows))
            return tables
    finally:
        await engine.dispose()


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def failed_start(process: Process) -> int:
    try:
        return process.popen.wait(timeout=START_SECONDS)
    except subprocess.TimeoutExpired:
        process.stop()
        pytest.fail("serve kept running on a port in use")


def test_a_start_on_a_taken_port_writes_nothing(
    tmp_path: Path, database_url: str, taken_port: int, servers: list[Process]
) -> None:
    """Before, the directory was synced (in development, the demo partners re-pointed at
    this instance) and the rule set's load audited, and only then did the bind fail."""
    before = asyncio.run(snapshot(database_url))
    process = start(
        tmp_path, database_url, "serve",
        env={"RUTA_ENV": "development", "RUTA_PORT": str(taken_port)},
    )  # fmt: skip
    servers.append(process)
    assert failed_start(process) != 0
    assert any("address already in use" in str(r.get("event")).lower() for r in process.records())
    assert asyncio.run(snapshot(database_url)) == before


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_start_with_migrate_on_a_taken_port_does_not_migrate(
    tmp_path: Path, database_url: str, taken_port: int, servers: list[Process]
) -> None:
    empty = tmp_path / "never-migrated.db"
    process = start(
        tmp_path, f"sqlite+aiosqlite:///{empty}", "serve", "--migrate",
        env={"RUTA_ENV": "development", "RUTA_PORT": str(taken_port)},
    )  # fmt: skip
    servers.append(process)
    assert failed_start(process) != 0
    if empty.exists():
        with sqlite3.connect(empty) as conn:
            assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_directory_where_the_partner_file_should_be_is_one_line(
    tmp_path: Path, database_url: str, servers: list[Process]
) -> None:
    """What Docker mounts when ./partners.yaml does not exist: a directory. Before, the
    start failed with a traceback after the port was bound."""
    mounted = tmp_path / "partners.yaml"
    mounted.mkdir()
    before = asyncio.run(snapshot(database_url))
    process = start(tmp_path, database_url, "serve", env={"RUTA_PARTNERS_PATH": str(mounted)})
    servers.append(process)
    assert failed_start(process) == 2
    [record] = process.records()
    assert record["event"] == "partner_directory_unreadable"
    assert record["path"] == str(mounted)
    assert asyncio.run(snapshot(database_url)) == before
