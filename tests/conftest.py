"""Test fixtures: every database test runs on SQLite and on PostgreSQL.

The PostgreSQL server comes from ``RUTA_TEST_POSTGRES_URL`` (an admin URL, e.g.
``postgresql://postgres@127.0.0.1:5432/postgres``); failing that from testcontainers when
Docker is available; failing that the PostgreSQL half is skipped with the reason. With
``RUTA_TEST_REQUIRE_POSTGRES=1`` (set by CI) a skipped PostgreSQL test fails the run.

Schemas come only from Alembic: each engine gets a template migrated once per session, and
each test gets a copy of it (a file copy on SQLite, ``CREATE DATABASE … TEMPLATE`` on
PostgreSQL), so tests commit for real and run the worker without stepping on each other.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import Counter
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import audit
from app.auth import create_client
from app.db import create_engine, create_sessionmaker
from app.main import create_app
from app.migrations import upgrade
from app.models import Role
from app.settings import Environment, Settings
from tests.delivery.partner_server import PartnerServer

REQUIRE_POSTGRES = os.environ.get("RUTA_TEST_REQUIRE_POSTGRES") == "1"
TEST_SECRET = "test-secret-key-0123456789abcdef-0123456789"
#: Every table a screening's transaction writes (app.services.intake, with its audit events).
INTAKE_TABLES = (
    "subjects",
    "screenings",
    "decisions",
    "referrals",
    "referral_events",
    "deliveries",
    "audit_events",
)


def _postgres_admin_url() -> tuple[str | None, str]:
    url = os.environ.get("RUTA_TEST_POSTGRES_URL")
    if url:
        return url, ""
    try:
        from testcontainers.postgres import PostgresContainer  # type: ignore[import-not-found]
    except ImportError:
        return None, (
            "PostgreSQL tests skipped: set RUTA_TEST_POSTGRES_URL "
            "(e.g. postgresql://postgres@127.0.0.1:5432/postgres) or install testcontainers "
            "with Docker available"
        )
    if shutil.which("docker") is None:  # pragma: no cover - depends on the machine
        return None, "PostgreSQL tests skipped: no RUTA_TEST_POSTGRES_URL and no Docker"
    try:  # pragma: no cover - Docker is not available on the project's machines
        container = PostgresContainer("postgres:16-alpine")
        container.start()
        _containers.append(container)
        return container.get_connection_url(), ""
    except Exception as exc:  # pragma: no cover
        return None, f"PostgreSQL tests skipped: testcontainers failed ({type(exc).__name__})"


_containers: list[Any] = []


def _admin_execute(admin_url: str, *statements: str) -> None:
    """Run CREATE/DROP DATABASE through asyncpg (no sync driver is a dependency)."""
    import asyncio

    import asyncpg

    u = make_url(admin_url)

    async def run() -> None:
        conn = await asyncpg.connect(
            host=u.host or "127.0.0.1",
            port=u.port or 5432,
            user=u.username or "postgres",
            password=u.password,
            database=u.database or "postgres",
        )
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


def _db_url(admin_url: str, database: str) -> str:
    u = make_url(admin_url).set(drivername="postgresql+asyncpg", database=database)
    return u.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[tuple[str, str]]:
    admin_url, reason = _postgres_admin_url()
    if admin_url is None:
        if REQUIRE_POSTGRES:
            pytest.fail("RUTA_TEST_REQUIRE_POSTGRES=1 but PostgreSQL is unavailable: " + reason)
        pytest.skip(reason)
    name = f"ruta_tpl_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    _admin_execute(admin_url, f'CREATE DATABASE "{name}"')
    try:
        upgrade(_db_url(admin_url, name))
        yield admin_url, name
    finally:
        _admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for container in _containers:  # pragma: no cover
            container.stop()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A freshly migrated database for this test, on each engine in turn."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "ruta.db"
        shutil.copyfile(template, path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    yield from _fresh_postgres(request)


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A freshly migrated PostgreSQL database, for what only PostgreSQL does."""
    yield from _fresh_postgres(request)


def _fresh_postgres(request: pytest.FixtureRequest) -> Iterator[str]:
    admin_url, template_name = request.getfixturevalue("postgres_template")
    name = f"ruta_t_{uuid.uuid4().hex[:12]}"
    _admin_execute(admin_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"')
    try:
        yield _db_url(admin_url, name)
    finally:
        _admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def settings(database_url: str) -> Settings:
    # The delivery worker is started explicitly by the tests that exercise it.
    return Settings(
        env=Environment.test,
        database_url=database_url,
        secret_key=TEST_SECRET,  # type: ignore[arg-type]
        embedded_worker=False,
    )


@pytest.fixture
async def sessionmaker(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """A plain sessionmaker (no audit configuration): for reading what the app stored."""
    engine = create_engine(settings.database_url)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ruta.test") as client:
        yield client


@pytest.fixture
def partner_server() -> Iterator[PartnerServer]:
    """A real partner HTTP server on loopback (tests/delivery/partner_server.py)."""
    server = PartnerServer().start()
    try:
        yield server
    finally:
        server.stop()


KeyFactory = Callable[..., Awaitable[str]]


@pytest.fixture
def api_key(app: FastAPI, settings: Settings) -> KeyFactory:
    """Create an API client and return its key: ``await api_key("clinic", "IOM Peru")``."""
    return key_factory(app, settings)


def key_factory(app: FastAPI, settings: Settings) -> KeyFactory:
    """What the ``api_key`` fixture returns, for tests that build their own app."""

    async def make(role: str, organisation: str | None = None, name: str = "test") -> str:
        async with app.state.sessionmaker() as session:
            _client, key = await create_client(
                session,
                secret_key=settings.secret_key.get_secret_value().encode(),
                name=name,
                role=Role(role),
                organisation=organisation,
                actor=audit.system("test-setup"),
            )
            await session.commit()
        return key

    return make


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI a skipped PostgreSQL test is a failure, whatever skipped it."""
    if not REQUIRE_POSTGRES:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    skipped = [r.nodeid for r in reporter.stats.get("skipped", []) if "postgresql" in r.nodeid]
    if skipped:
        reporter.write_line(
            f"FAILED: {len(skipped)} PostgreSQL test(s) skipped under "
            "RUTA_TEST_REQUIRE_POSTGRES=1: " + ", ".join(skipped[:10]),
            red=True,
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


async def refuse_inserts(app: FastAPI, table: str, column: str, value: str) -> None:
    """Make the database refuse rows of ``table`` whose ``column`` is ``value`` (a trigger
    that raises, as a constraint would): whatever transaction writes one fails there."""
    name = f"ruta_test_refuse_{table}"
    async with app.state.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(
                text(
                    f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ "
                    f"BEGIN IF NEW.{column} = '{value}' THEN "
                    f"RAISE EXCEPTION 'refused {table} row'; END IF; RETURN NEW; END $$"
                )
            )
            await conn.execute(
                text(
                    f"CREATE TRIGGER {name} BEFORE INSERT ON {table} "
                    f"FOR EACH ROW EXECUTE FUNCTION {name}()"
                )
            )
        else:
            await conn.execute(
                text(
                    f"CREATE TRIGGER {name} BEFORE INSERT ON {table} "
                    f"WHEN NEW.{column} = '{value}' "
                    f"BEGIN SELECT RAISE(ABORT, 'refused {table} row'); END"
                )
            )


@pytest.fixture
async def poisoned(app: FastAPI) -> str:
    """A case code whose subject the database refuses: the group holding that screening
    fails at its first statement."""
    await refuse_inserts(app, "subjects", "case_code", "POISON-0001")
    return "POISON-0001"


def counter_total(counter: Counter) -> float:
    """A Prometheus counter's total over all its label sets, in this process."""
    return sum(s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total"))


def log_records(text: str) -> list[dict[str, Any]]:
    """The JSON log lines in captured output."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def log_lines(found: list[dict[str, Any]], event: str, **fields: Any) -> list[dict[str, Any]]:
    """The records of ``event`` whose fields hold these values."""
    wanted = {"event": event, **fields}
    return [r for r in found if all(r.get(k) == v for k, v in wanted.items())]
