"""The two database roles on PostgreSQL: the owner migrates, the service owns nothing.

The service's role, granted its privileges by ``ruta db grant``'s function, runs the README's
walkthrough and the rest of what the service does, but cannot switch the audit trail's
protection off: no disabling, dropping or replacing the triggers or their function, no
dropping, truncating, updating or deleting the audit tables. In production, a service
whose role could do any of that is refused: at start, and by /readyz.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from app.db import create_engine
from app.delivery.worker import DeliveryWorker
from app.main import create_app
from app.migrations import (
    SERVICE_PRIVILEGES,
    RoleError,
    audit_protection_problems,
    grant_service_privileges,
)
from app.settings import Environment, Settings
from tests.cli.test_cli import run
from tests.cli.test_serve import start
from tests.conftest import TEST_SECRET, _admin_execute, bearer, key_factory
from tests.delivery.conftest import add_partner
from tests.delivery.partner_server import PartnerServer
from tests.factories import adult_consenting
from tests.test_walkthrough import dev_server, test_the_readme_walkthrough

__all__ = ["dev_server"]  # the walkthrough's server, here on the service role's URL


def as_role(url: str, role: str) -> str:
    return make_url(url).set(username=role, password=None).render_as_string(hide_password=False)


async def grant(owner_url: str, role: str) -> list[str]:
    engine = create_engine(owner_url)
    try:
        async with engine.begin() as conn:
            return await grant_service_privileges(conn, role)
    finally:
        await engine.dispose()


@pytest.fixture
def new_role(postgres_url: str) -> Iterator[str]:
    """A login role that owns nothing and may do nothing yet; dropped afterwards."""
    role = f"ruta_svc_{uuid.uuid4().hex[:10]}"
    _admin_execute(postgres_url, f'CREATE ROLE "{role}" LOGIN')
    try:
        yield role
    finally:
        # DROP OWNED revokes what the role was granted here (and on the database).
        _admin_execute(postgres_url, f'DROP OWNED BY "{role}"', f'DROP ROLE "{role}"')


@pytest.fixture
def service_url(postgres_url: str, new_role: str) -> str:
    asyncio.run(grant(postgres_url, new_role))
    return as_role(postgres_url, new_role)


@pytest.fixture
def database_url(service_url: str) -> str:
    """What the conftest's fixtures (settings, app, http) connect with: the service role."""
    return service_url


def test_the_readme_walkthrough_as_the_service_role(
    dev_server: tuple[str, dict[str, str]],
) -> None:
    """`ruta demo`, then `ruta serve` with the embedded worker: intake, delivery to the demo
    inbox, the partner's status, disclosures and verification, all as the service role."""
    test_the_readme_walkthrough(dev_server)


async def test_what_the_service_does_beyond_the_walkthrough(
    app: FastAPI, http: httpx.AsyncClient, settings: Settings
) -> None:
    """The worker's claim (row locks, advisory locks) and delivery, the partner directory's
    admin, a consent withdrawal, an erasure and the auditor's reads, as the service role."""
    api_key = key_factory(app, settings)
    admin, auditor = await api_key("admin"), await api_key("auditor")
    clinic = await api_key("clinic", "Caravana de la Vida")
    partner = PartnerServer().start()
    try:
        await add_partner(http, api_key, "svc-partner", partner.url)
        body = adult_consenting()
        created = await http.post("/v1/screenings", json=body, headers=bearer(clinic))
        assert created.status_code == 201, created.text
        worker = DeliveryWorker(app.state.sessionmaker, settings, worker_id="svc-worker")
        for _ in range(50):  # bounded: until the partner has its referrals
            await worker.run_once()
            if partner.received:
                break
            await asyncio.sleep(0.05)
        assert partner.received
    finally:
        partner.stop()
    for action in ("pause", "resume", "secrets/rotate"):
        changed = await http.post(f"/v1/partners/svc-partner/{action}", headers=bearer(admin))
        assert changed.status_code == 200, (action, changed.text)
    withdrawn = await http.post(
        f"/v1/screenings/{body['id']}/consent/withdraw", headers=bearer(clinic)
    )
    assert withdrawn.status_code == 200, withdrawn.text
    erasure = {
        "organisation": "Caravana de la Vida",
        "case_code": body["subject"]["case_code"],
        "reason": "data_subject_request",
    }
    erased = await http.post("/v1/erasures", json=erasure, headers=bearer(admin))
    assert erased.status_code == 201, erased.text
    for path in ("/v1/audit/verify", "/v1/audit/export", "/v1/audit/events", "/v1/referrals"):
        response = await http.get(path, headers=bearer(auditor))
        assert response.status_code == 200, (path, response.text)
    assert (await http.get("/metrics")).status_code == 200
    assert (await http.get("/readyz")).status_code == 200


#: Statements run as the service role on each audit table: each must be refused for want
#: of privilege (not stopped by the triggers it tries to get around).
FORBIDDEN = [
    "ALTER TABLE {t} DISABLE TRIGGER ALL",
    "ALTER TABLE {t} DISABLE TRIGGER {t}_append_only",
    "ALTER TABLE {t} DISABLE TRIGGER {t}_no_truncate",
    "DROP TRIGGER {t}_append_only ON {t}",
    "DROP TRIGGER {t}_no_truncate ON {t}",
    "CREATE TRIGGER sneak BEFORE INSERT ON {t} FOR EACH ROW "
    "EXECUTE FUNCTION ruta_audit_refuse_change()",
    "ALTER TABLE {t} OWNER TO CURRENT_USER",
    "ALTER TABLE {t} ADD COLUMN note text",
    "DROP TABLE {t}",
    "DROP TABLE {t} CASCADE",
    "TRUNCATE {t}",
    "UPDATE {t} SET seq = seq",
    "DELETE FROM {t}",
    "CREATE OR REPLACE FUNCTION ruta_audit_refuse_change() RETURNS trigger "
    "LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$",
    "DROP FUNCTION ruta_audit_refuse_change() CASCADE",
    "ALTER FUNCTION ruta_audit_refuse_change() RENAME TO old_refusal",
    "ALTER FUNCTION ruta_audit_refuse_change() OWNER TO CURRENT_USER",
    "CREATE OR REPLACE FUNCTION ruta_audit_lock_head(lock_key bigint) RETURNS TABLE "
    "(seq bigint, hash varchar, occurred_at timestamptz) LANGUAGE sql AS "
    "$$ SELECT 1::bigint, ''::varchar, now() $$",
    "SET session_replication_role = replica",
    "CREATE TABLE shadow (seq bigint)",
]


@pytest.mark.parametrize("table", ["audit_events", "audit_checkpoints"])
async def test_the_service_role_cannot_switch_the_protection_off(
    app: FastAPI, service_url: str, postgres_url: str, table: str
) -> None:
    # Something to protect: the app's start wrote events, and a checkpoint is signed.
    owner = create_engine(postgres_url)
    service = create_engine(service_url)
    try:
        async with owner.connect() as conn:
            before = (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar()  # noqa: S608
        for template in FORBIDDEN:
            statement = template.format(t=table)
            async with service.connect() as conn:
                with pytest.raises(DBAPIError) as excinfo:
                    await conn.execute(text(statement))
            sqlstate = getattr(excinfo.value.orig, "sqlstate", None)
            assert sqlstate == "42501", (statement, sqlstate)  # insufficient_privilege
            assert "ruta audit" not in str(excinfo.value.orig), statement  # not the trigger
        async with owner.connect() as conn:
            after = (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar()  # noqa: S608
            triggers = (
                await conn.execute(
                    text(
                        "SELECT tgname, CAST(tgenabled AS text) FROM pg_trigger "
                        "WHERE tgrelid = CAST(:t AS regclass) AND NOT tgisinternal "
                        "ORDER BY tgname"
                    ),
                    {"t": table},
                )
            ).all()
        assert after == before
        assert triggers == [(f"{table}_append_only", "O"), (f"{table}_no_truncate", "O")]
        async with service.connect() as conn:
            assert await audit_protection_problems(conn) == []
    finally:
        await owner.dispose()
        await service.dispose()


async def test_readyz_in_production_fails_while_the_role_could_alter_the_audit(
    postgres_url: str, service_url: str
) -> None:
    """As the owner (here a superuser too) /readyz says why; as the service role, ready."""
    for url, ready in ((postgres_url, False), (service_url, True)):
        settings = Settings(
            env=Environment.test,
            database_url=url,
            secret_key=SecretStr(TEST_SECRET),
            embedded_worker=False,
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            app.state.settings = settings.model_copy(update={"env": Environment.production})
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://ruta") as http:
                response = await http.get("/readyz")
        if ready:
            assert response.status_code == 200, response.text
        else:
            assert response.status_code == 503
            reasons = response.json()["database_role"]
            assert "the role is a superuser" in reasons
            assert "the role owns audit_events" in reasons
            assert "the role owns ruta_audit_refuse_change" in reasons


PRODUCTION = {
    "RUTA_ENV": "production",
    "RUTA_ENCRYPTION_KEK": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    "RUTA_AUDIT_SIGNING_KEY": "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=",
}


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_production_refuses_to_start_as_a_role_that_could_alter_the_audit(
    tmp_path: Path, postgres_url: str, command: str
) -> None:
    process = start(tmp_path, postgres_url, command, env=PRODUCTION)
    assert process.popen.wait(timeout=60) == 2, process.lines()
    [refusal] = [r for r in process.records() if r["event"] == "database_role_can_alter_audit"]
    assert refusal["level"] == "error"
    assert "the role owns audit_events" in refusal["problems"]


def test_production_starts_as_the_service_role(tmp_path: Path, service_url: str) -> None:
    process = start(tmp_path, service_url, "serve", env=PRODUCTION)
    try:
        for _ in range(300):  # bounded: 30 s
            try:
                ready = httpx.get(f"{process.url}/readyz", timeout=1)
                break
            except httpx.HTTPError:
                assert process.popen.poll() is None, process.lines()
                time.sleep(0.1)
        else:
            pytest.fail("not serving within 30 s")
        assert ready.status_code == 200, ready.text
    finally:
        process.stop()
    assert not [r for r in process.records() if r["level"] == "error"]


async def _privileges(url: str, role: str) -> dict[str, set[str]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT table_name, privilege_type FROM information_schema.role_table_grants "
                    "WHERE grantee = :role"
                ),
                {"role": role},
            )
            held: dict[str, set[str]] = {}
            for table, privilege in rows.all():
                held.setdefault(table, set()).add(privilege)
            return held
    finally:
        await engine.dispose()


def test_migrate_grants_the_service_role_exactly_its_privileges(
    postgres_url: str, new_role: str
) -> None:
    service = as_role(postgres_url, new_role)
    # Privileges the service must not keep: migrate takes them away again.
    _admin_execute(postgres_url, f'GRANT ALL ON audit_events TO "{new_role}"')
    result = run(service, "migrate", env={"RUTA_MIGRATION_DATABASE_URL": postgres_url})
    assert result.returncode == 0, result.stderr
    assert f"privileges granted to the service's role {new_role}" in result.stdout
    held = asyncio.run(_privileges(postgres_url, new_role))
    assert held == {table: set(p) for table, p in SERVICE_PRIVILEGES.items()}
    assert held["audit_events"] == {"SELECT", "INSERT"}


def test_db_grant_and_its_refusals(postgres_url: str, new_role: str) -> None:
    service = as_role(postgres_url, new_role)
    owner = {"RUTA_MIGRATION_DATABASE_URL": postgres_url}
    granted = run(service, "db", "grant", env=owner)
    assert granted.returncode == 0, granted.stderr
    assert f"GRANT SELECT, INSERT ON TABLE audit_events TO {new_role}" in granted.stdout
    superuser = run(service, "db", "grant", "postgres", env=owner)
    assert superuser.returncode == 2
    assert "superuser" in superuser.stderr
    missing = run(service, "db", "grant", "no_such_role_here", env=owner)
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr
    _admin_execute(postgres_url, "CREATE TABLE unlisted (id int)")
    unknown = run(service, "db", "grant", env=owner)
    assert unknown.returncode == 2
    assert "unlisted" in unknown.stderr


async def test_grant_refuses_the_owner_itself(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    try:
        async with engine.begin() as conn:
            with pytest.raises(RoleError):
                await grant_service_privileges(conn, "postgres")
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        path = tmp_path / "ruta.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite+aiosqlite:///{path}"
    else:
        yield request.getfixturevalue("postgres_url")


async def test_every_table_the_migrations_make_has_a_privilege_entry(any_database: str) -> None:
    """A table added by a later migration fails here until SERVICE_PRIVILEGES names what
    the service may do with it (and `ruta db grant` refuses the schema meanwhile)."""
    engine = create_engine(any_database)
    try:
        async with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                query = "SELECT name FROM sqlite_master WHERE type = 'table'"
                # SQLite has no roles: nothing to refuse.
                assert await audit_protection_problems(conn) == []
            else:
                query = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            tables = set((await conn.execute(text(query))).scalars())
    finally:
        await engine.dispose()
    assert tables - {"sqlite_sequence"} == set(SERVICE_PRIVILEGES)


def test_compose_runs_the_service_as_a_role_that_owns_nothing() -> None:
    compose = yaml.safe_load((Path(__file__).parent.parent / "compose.yaml").read_text())
    services = compose["services"]
    owner = services["postgres"]["environment"]["POSTGRES_USER"]
    migrate = services["migrate"]["environment"]
    assert urlsplit(migrate["RUTA_MIGRATION_DATABASE_URL"]).username == owner
    assert services["migrate"]["command"] == ["ruta", "migrate"]
    for name in ("api", "worker"):
        environment = services[name]["environment"]
        assert "RUTA_MIGRATION_DATABASE_URL" not in environment
        assert urlsplit(environment["RUTA_DATABASE_URL"]).username == "ruta_app" != owner
        assert "--migrate" not in services[name].get("command", [])
    assert "CREATE ROLE ruta_app LOGIN" in compose["configs"]["ruta-app-role"]["content"]
