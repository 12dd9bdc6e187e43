"""The ``ruta`` command."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

import structlog
import typer
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import audit
from app.audit.cli import audit_cli
from app.migrations import RoleError
from app.partners.cli import partners_cli
from app.rules.cli import rules_cli
from app.settings import Environment, Settings, get_settings, tune_gc

log = structlog.get_logger("ruta.cli")

cli = typer.Typer(
    name="ruta",
    help="Ruta: referral routing for possible victims of human trafficking.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
clients_cli = typer.Typer(help="API clients and their keys.", no_args_is_help=True)
cli.add_typer(clients_cli, name="clients")
cli.add_typer(audit_cli, name="audit")
cli.add_typer(rules_cli, name="rules")
cli.add_typer(partners_cli, name="partners")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"ruta {version('ruta')}")
        raise typer.Exit()


@cli.callback()
def _main(
    _show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Ruta: referral routing for possible victims of human trafficking."""
    multiproc = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if multiproc:
        # prometheus_client writes there from the first import of a metric (below), and
        # fails on a directory that does not exist yet.
        Path(multiproc).mkdir(parents=True, exist_ok=True)
    from app.observability import configure_logging

    # A command's log lines (an admin change's trace) are JSON on stderr like the
    # service's, at WARNING unless RUTA_LOG_LEVEL says otherwise; `serve` and `worker`
    # log at their settings' level. A process that configured its logging already (a test
    # running commands in-process) keeps it.
    if not structlog.is_configured():
        configure_logging(os.environ.get("RUTA_LOG_LEVEL", "WARNING"))


def settings_error(exc: ValueError) -> str:
    """What is wrong with the settings, naming the variables but never quoting a value
    given (pydantic's own message would: a secret, a password inside a database URL)."""
    if not isinstance(exc, ValidationError):
        return str(exc)
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        message = str(error["msg"]).removeprefix("Value error, ")
        where = f"RUTA_{str(error['loc'][0]).upper()}: " if error["loc"] else ""
        problems.append(where + message)
    return "; ".join(problems)


def _settings() -> Settings:
    try:
        return get_settings()
    except ValueError as exc:
        typer.echo(f"error: {settings_error(exc)}", err=True)
        raise typer.Exit(2) from None


def _service_settings() -> Settings:
    """The settings of a long-running process (``serve``, ``worker``), whose every line,
    a refusal to start included, is a JSON log line on stderr."""
    from app.observability import configure_logging

    configure_logging(os.environ.get("RUTA_LOG_LEVEL", "INFO"))
    try:
        settings = get_settings()
    except ValueError as exc:
        log.error("settings_refused", reason=settings_error(exc))
        raise typer.Exit(2) from None
    configure_logging(settings.log_level)
    return settings


@asynccontextmanager
async def _session(settings: Settings) -> AsyncIterator[AsyncSession]:
    """A session for one CLI command, with the audit trail configured."""
    from app.db import create_engine, create_sessionmaker

    engine = create_engine(settings.database_url)
    maker = create_sessionmaker(engine)
    audit.configure_sessionmaker(maker, settings)
    try:
        async with maker() as session:
            yield session
    finally:
        await engine.dispose()


@cli.command()
def migrate(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply the Alembic migrations, as RUTA_MIGRATION_DATABASE_URL's role (or
    RUTA_DATABASE_URL's); then, when the service connects as another role, grant it its
    privileges (`ruta db grant`)."""
    from alembic.util import CommandError

    settings = _settings()
    try:
        granted = _migrate(settings, revision)
    except (RoleError, CommandError) as exc:
        # Alembic's message names the revision it cannot find or reach, never data.
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"database at {revision}")
    if granted is not None:
        typer.echo(f"privileges granted to the service's role {granted}")


def _migrate(settings: Settings, revision: str = "head") -> str | None:
    """Upgrade, then grant the service's role its privileges when it is not the migrating
    one; return that role's name if privileges were granted."""
    from app.migrations import service_role_of, upgrade

    upgrade(settings.migrations_url, revision)
    if settings.is_sqlite or settings.migration_database_url is None:
        return None
    role = service_role_of(settings.database_url)
    if role is None or role == service_role_of(settings.migrations_url):
        return None
    asyncio.run(_grant(settings, role))
    return role


async def _grant(settings: Settings, role: str) -> list[str]:
    from app.db import create_engine
    from app.migrations import grant_service_privileges

    engine = create_engine(settings.migrations_url)
    try:
        async with engine.begin() as conn:
            return await grant_service_privileges(conn, role)
    finally:
        await engine.dispose()


def _refuse_a_role_that_can_alter_the_audit(settings: Settings) -> None:
    """In production, a service whose database role could switch the audit trail's
    protection off does not start (and /readyz says why, should it be started otherwise)."""
    if settings.env is not Environment.production or settings.is_sqlite:
        return
    from app.db import create_engine
    from app.migrations import audit_protection_problems

    async def check() -> list[str]:
        engine = create_engine(settings.database_url)
        try:
            async with engine.connect() as conn:
                return await audit_protection_problems(conn)
        finally:
            await engine.dispose()

    try:
        problems = asyncio.run(check())
    except Exception as exc:  # unreachable now: /readyz checks again on every probe
        log.warning("database_role_not_checked", error_type=type(exc).__name__)
        return
    if problems:
        log.error(
            "database_role_can_alter_audit",
            problems=problems,
            hint="run the service as a role that owns nothing and migrate as the owner "
            "(RUTA_MIGRATION_DATABASE_URL, ruta db grant); see docs/operations.md",
        )
        raise typer.Exit(2)


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (RUTA_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (RUTA_PORT).")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (RUTA_WORKERS).")] = None,
    migrate_first: Annotated[
        bool, typer.Option("--migrate/--no-migrate", help="Apply migrations before serving.")
    ] = False,
) -> None:
    """Serve the HTTP API with uvicorn. Every line it writes is a JSON log line on stderr.

    Nothing is written to the database before the port is bound and every check has passed:
    a start that fails (the port taken, a directory file that does not validate, a role
    that could alter the audit) leaves the database, and a running server's partners, as
    they were."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from app.observability import logging_config

    settings = _service_settings()
    _check_the_directory_file(settings)
    processes = workers or settings.workers
    trusted = settings.trusted_proxies
    config = uvicorn.Config(
        "app.main:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=processes,
        # X-Forwarded-For/-Proto only from the proxies named in RUTA_TRUSTED_PROXIES; by
        # default from nobody (uvicorn's own default trusts 127.0.0.1, and a caller on the
        # same host could then pick a new address for every failed authentication).
        proxy_headers=bool(trusted),
        forwarded_allow_ips=",".join(trusted) if trusted else None,
        access_log=False,  # Ruta's `request` line is the access log (app/observability.py)
        log_config=logging_config(settings.log_level),
    )
    # Bound first: a port in use ends the start here (uvicorn logs it and exits 1).
    sock = config.bind_socket()
    _serve_the_bound_address(config.host, sock.getsockname()[1])
    if migrate_first:
        try:
            _migrate(settings)
        except RoleError as exc:
            log.error("privileges_not_granted", reason=str(exc))
            raise typer.Exit(2) from None
    _refuse_a_role_that_can_alter_the_audit(settings)
    from app import metrics

    with metrics.multiprocess_directory(processes):
        if processes > 1:
            Multiprocess(config, sockets=[sock]).run()
            return
        server = uvicorn.Server(config)
        server.run(sockets=[sock])
    if not server.started:
        raise typer.Exit(3)  # uvicorn's STARTUP_FAILURE: the app's start failed


def _serve_the_bound_address(host: str, port: int) -> None:
    """The address served, for this process's settings and its worker processes' (they
    read the environment): without RUTA_PUBLIC_BASE_URL the public URL, and so the demo
    partners' endpoints, thin links and status URLs, follow it."""
    os.environ["RUTA_HOST"] = host
    os.environ["RUTA_PORT"] = str(port)
    get_settings.cache_clear()


def _check_the_directory_file(settings: Settings) -> None:
    """The partner directory file validates before anything starts: a file missing, a
    directory where the file should be (an unshipped bind mount), or a file that does not
    validate is one log line and exit 2, not a traceback after the port was bound."""
    from app.partners.directory import DirectoryError, directory_env, load_directory
    from app.partners.service import directory_path

    path = directory_path(settings)
    if path is None:
        return
    try:
        load_directory(
            path, relaxed=settings.relaxed_network, env=directory_env(settings.public_base_url)
        )
    except (OSError, UnicodeDecodeError) as exc:
        log.error(
            "partner_directory_unreadable",
            path=str(path),
            reason=getattr(exc, "strerror", None) or type(exc).__name__,
        )
        raise typer.Exit(2) from None
    except DirectoryError as exc:
        log.error("partner_directory_invalid", path=str(path), problems=exc.errors)
        raise typer.Exit(2) from None


#: How often `ruta worker` touches its heartbeat file, and how old the file may be before
#: `ruta worker --check` calls the worker dead.
HEARTBEAT_SECONDS = 10.0
HEARTBEAT_STALE_SECONDS = 60.0


@cli.command()
def worker(
    concurrency: Annotated[int, typer.Option(help="Deliveries in flight at once.")] = 10,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Do not work: exit 0 if the worker using RUTA_WORKER_HEARTBEAT_PATH is alive "
            "(touched it in the last minute), 1 if not. For a container's health check.",
        ),
    ] = False,
) -> None:
    """Run a delivery worker (production: one or more beside the API replicas). Every line
    it writes is a JSON log line on stderr.

    With RUTA_WORKER_HEARTBEAT_PATH set, it touches that file every 10 seconds while its
    database answers, and removes it when it stops; `ruta worker --check` reads it."""
    if check:
        _check_heartbeat(_settings())
        return
    import signal

    from app.delivery.worker import DeliveryWorker

    settings = _service_settings()
    _refuse_a_role_that_can_alter_the_audit(settings)
    tune_gc(settings)

    async def run() -> None:
        from app.db import create_engine, create_sessionmaker

        engine = create_engine(settings.database_url)
        maker = create_sessionmaker(engine)
        audit.configure_sessionmaker(maker, settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        delivery_worker = DeliveryWorker(maker, settings, concurrency=concurrency)
        log.info("delivery_worker_started", worker_id=delivery_worker.worker_id)
        heartbeat = settings.worker_heartbeat_path
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(delivery_worker.run(stop))
                if heartbeat is not None:
                    tasks.create_task(_beat(maker, heartbeat, stop))
        finally:
            if heartbeat is not None:
                heartbeat.unlink(missing_ok=True)
            await engine.dispose()
        log.info("delivery_worker_stopped", worker_id=delivery_worker.worker_id)

    asyncio.run(run())


async def _beat(maker: async_sessionmaker[AsyncSession], path: Path, stop: asyncio.Event) -> None:
    """Touch ``path`` every HEARTBEAT_SECONDS while the database answers."""
    import contextlib

    from sqlalchemy import text

    while not stop.is_set():
        try:
            async with maker() as session:
                await session.execute(text("SELECT 1"))
            await asyncio.to_thread(path.touch)
        except Exception as exc:  # the worker's own loop logs and retries too
            log.warning("worker_heartbeat_missed", error_type=type(exc).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), HEARTBEAT_SECONDS)


def _check_heartbeat(settings: Settings) -> None:
    import time

    path = settings.worker_heartbeat_path
    if path is None:
        typer.echo("error: set RUTA_WORKER_HEARTBEAT_PATH (the worker's heartbeat file)", err=True)
        raise typer.Exit(2)
    try:
        age = time.time() - path.stat().st_mtime
    except OSError:
        typer.echo(f"error: no heartbeat at {path}: the worker is not running", err=True)
        raise typer.Exit(1) from None
    if age > HEARTBEAT_STALE_SECONDS:
        typer.echo(f"error: the worker's last heartbeat is {age:.0f} s old", err=True)
        raise typer.Exit(1)
    typer.echo(f"worker alive (heartbeat {age:.0f} s ago)")


@clients_cli.command("create")
def clients_create(
    name: Annotated[str, typer.Option(help="A name for the client, e.g. the app or person.")],
    role: Annotated[str, typer.Option(help="clinic, partner, auditor or admin.")],
    organisation: Annotated[
        str | None, typer.Option(help="Organisation (required for clinic and partner).")
    ] = None,
) -> None:
    """Create an API client. The key is printed once, as the last line."""
    from app.models import Role

    try:
        role_value = Role(role)
    except ValueError:
        typer.echo("error: --role must be one of clinic, partner, auditor, admin", err=True)
        raise typer.Exit(2) from None
    settings = _settings()

    async def run() -> tuple[str, str]:
        from app.auth import create_client

        async with _session(settings) as session:
            client, key = await create_client(
                session,
                secret_key=settings.secret_key.get_secret_value().encode(),
                name=name,
                role=role_value,
                organisation=organisation,
                actor=audit.system("cli"),
            )
            await session.commit()
            return str(client.id), key

    try:
        client_id, key = asyncio.run(run())
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"created {role_value.value} client {client_id} ({name})", err=True)
    typer.echo("store this key now; it is not shown again:", err=True)
    typer.echo(key)


@cli.command()
def erase(
    organisation: Annotated[str, typer.Option(help="The clinic organisation of the subject.")],
    case_code: Annotated[str, typer.Option(help="The subject's pseudonymous case code.")],
    reason: Annotated[
        str,
        typer.Option(
            help="data_subject_request, consent_withdrawn, retention_expired or entered_in_error."
        ),
    ],
) -> None:
    """Erase a subject's personal data by deleting its data key (crypto-shredding)."""
    from app.errors import NotFound
    from app.models.base import utcnow
    from app.services import erasure

    try:
        why = erasure.ErasureReason(reason)
    except ValueError:
        typer.echo("error: unknown --reason", err=True)
        raise typer.Exit(2) from None
    settings = _settings()

    async def run() -> int:
        from app.db import create_engine, purge_dead_rows

        async with _session(settings) as session:
            subject = await erasure.find_subject(session, organisation, case_code)
            count = await erasure.erase_subject(
                session, subject=subject, reason=why, actor=audit.system("cli"), now=utcnow()
            )
            await session.commit()
        # VACUUM is the owner's: with two roles, the migrating one (docs/operations.md).
        engine = create_engine(settings.migrations_url)
        try:
            await purge_dead_rows(engine)
        finally:
            await engine.dispose()
        return count

    try:
        count = asyncio.run(run())
    except NotFound:
        typer.echo("error: no subject with this case code in this organisation", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"erased: {count} screening(s) made unreadable; the erasure is in the audit trail")


@clients_cli.command("list")
def clients_list(
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON array of clients, for scripts.")
    ] = False,
) -> None:
    """List API clients (never their keys): id, role, organisation, name, state, key id,
    and a rotated-out key still in its grace period."""
    import json

    settings = _settings()

    async def run() -> list[dict[str, str | None]]:
        from sqlalchemy import select

        from app.models import ApiClient
        from app.models.base import utcnow

        now = utcnow()
        async with _session(settings) as session:
            rows = (
                await session.execute(select(ApiClient).order_by(ApiClient.created_at))
            ).scalars()
            listed: list[dict[str, str | None]] = []
            for c in rows:
                grace = (
                    c.revoked_at is None
                    and c.previous_key_expires_at is not None
                    and c.previous_key_expires_at > now
                )
                listed.append(
                    {
                        "id": str(c.id),
                        "role": c.role,
                        "organisation": c.organisation,
                        "name": c.name,
                        "state": "revoked" if c.revoked_at else "active",
                        "key_id": c.key_id,
                        "previous_key_id": c.previous_key_id if grace else None,
                        "previous_key_expires_at": c.previous_key_expires_at.isoformat(
                            timespec="seconds"
                        )
                        if grace and c.previous_key_expires_at is not None
                        else None,
                    }
                )
            return listed

    clients = asyncio.run(run())
    if as_json:
        typer.echo(json.dumps(clients, ensure_ascii=False, indent=2))
        return
    for c in clients:
        row = [str(c[k] or "-") for k in ("id", "role", "organisation", "name", "state", "key_id")]
        if c["previous_key_id"] is not None:
            row.append(f"previous key {c['previous_key_id']} until {c['previous_key_expires_at']}")
        typer.echo("\t".join(row))


@clients_cli.command("revoke")
def clients_revoke(
    client_id: Annotated[str, typer.Argument(help="The client's id (see `ruta clients list`).")],
) -> None:
    """Revoke an API client's key at once (and a rotated-out key still in its grace period);
    the revocation is audited."""
    import uuid

    settings = _settings()
    try:
        ident = uuid.UUID(client_id)
    except ValueError:
        typer.echo("error: not a client id", err=True)
        raise typer.Exit(2) from None

    async def run() -> bool:
        from app.models import ApiClient
        from app.models.base import utcnow
        from app.observability import log_on_commit

        async with _session(settings) as session:
            client = await session.get(ApiClient, ident)
            if client is None:
                return False
            if client.revoked_at is None:
                # Both keys: the current one and any still in a rotation's grace period.
                previous = client.previous_key_id
                client.revoked_at = utcnow()
                client.previous_key_id = None
                client.previous_key_hash = None
                client.previous_key_expires_at = None
                await audit.record(
                    session,
                    action=audit.Action.client_revoked,
                    actor=audit.system("cli"),
                    data={
                        "target_id": str(client.id),
                        "key_id": client.key_id,
                        "previous_key_id": previous,
                        "reason": "cli",
                    },
                )
                log_on_commit(
                    session, log, "info", "api_client_revoked", client_id=str(client.id),
                    key_id=client.key_id, previous_key_id=previous, actor="system",
                    actor_id="cli",
                )  # fmt: skip
                await session.commit()
            return True

    if not asyncio.run(run()):
        typer.echo("error: no such client", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {client_id}")


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """Seconds in ``90s``, ``30m``, ``24h``, ``7d`` or a bare number of seconds."""
    value = text.strip().lower()
    unit = _DURATION_UNITS.get(value[-1:]) if value else None
    number = value[:-1] if unit is not None else value
    if not number.isdigit():
        raise ValueError(f"not a duration: {text!r} (try 30m, 24h or 7d)")
    return int(number) * (unit or 1)


@clients_cli.command("rotate")
def clients_rotate(
    client_id: Annotated[str, typer.Argument(help="The client's id (see `ruta clients list`).")],
    grace: Annotated[
        str | None,
        typer.Option(
            help="How long the previous key keeps working, e.g. 30m, 24h, 7d (at most 7d). "
            "Default: it stops at once."
        ),
    ] = None,
    grace_seconds: Annotated[
        int | None, typer.Option(min=0, help="The same, in seconds.", show_default=False)
    ] = None,
) -> None:
    """Give a client a new API key, keeping its id, role and organisation.

    The new key is printed once, as the last line. The rotation is audited, and so is every
    use of the previous key during the grace period.
    """
    import uuid
    from datetime import timedelta

    from app.auth import MAX_ROTATION_GRACE

    try:
        ident = uuid.UUID(client_id)
    except ValueError:
        typer.echo("error: not a client id", err=True)
        raise typer.Exit(2) from None
    if grace is not None and grace_seconds is not None:
        typer.echo("error: give --grace or --grace-seconds, not both", err=True)
        raise typer.Exit(2)
    try:
        seconds = parse_duration(grace) if grace is not None else (grace_seconds or 0)
    except ValueError as exc:
        typer.echo(f"error: --grace: {exc}", err=True)
        raise typer.Exit(2) from None
    period = timedelta(seconds=seconds)
    if period > MAX_ROTATION_GRACE:
        typer.echo("error: the grace period is at most 7 days", err=True)
        raise typer.Exit(2)
    settings = _settings()

    async def run() -> tuple[str, str, str, str | None, str | None]:
        from app.auth import rotate_client_key
        from app.models import ApiClient
        from app.models.base import utcnow

        async with _session(settings) as session:
            before = await session.get(ApiClient, ident)
            replaced = before.key_id if before is not None else None
            client, key = await rotate_client_key(
                session,
                secret_key=settings.secret_key.get_secret_value().encode(),
                client_id=ident,
                grace=period,
                now=utcnow(),
                actor=audit.system("cli"),
            )
            await session.commit()
            until = client.previous_key_expires_at
            return (
                client.role,
                client.name,
                key,
                replaced,
                until.isoformat(timespec="seconds") if until is not None else None,
            )

    from app.errors import Conflict, NotFound

    try:
        role, name, key, replaced, until = asyncio.run(run())
    except NotFound:
        typer.echo("error: no such client", err=True)
        raise typer.Exit(1) from None
    except Conflict:
        typer.echo(
            "error: the client is revoked; its key cannot be rotated (create a new client)",
            err=True,
        )
        raise typer.Exit(1) from None
    typer.echo(f"rotated the key of {role} client {client_id} ({name})", err=True)
    if until is None:
        typer.echo(f"the previous key ({replaced}) no longer works", err=True)
    else:
        typer.echo(f"the previous key ({replaced}) keeps working until {until}", err=True)
    typer.echo("store this key now; it is not shown again:", err=True)
    typer.echo(key)


deliveries_cli = typer.Typer(help="The delivery outbox.", no_args_is_help=True)
cli.add_typer(deliveries_cli, name="deliveries")


@deliveries_cli.command("replay")
def deliveries_replay(
    all_dead: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
    delivery_id: Annotated[str | None, typer.Argument(help="One delivery id.")] = None,
) -> None:
    """Replay dead letters with the same webhook-id and bytes (each replay is audited).

    One delivery id that is unknown, not a dead letter, or may not be sent again (its
    referral was revoked or moved on) is an error (exit 1); with --all, those that may not
    be sent again are listed and the others replayed."""
    import uuid

    from rich.progress import track

    if all_dead == (delivery_id is not None):
        typer.echo("error: give a delivery id or --all", err=True)
        raise typer.Exit(2)
    one: uuid.UUID | None = None
    if delivery_id is not None:
        try:
            one = uuid.UUID(delivery_id)
        except ValueError:
            typer.echo("error: not a delivery id (a UUID)", err=True)
            raise typer.Exit(2) from None
    settings = _settings()

    async def ids() -> list[uuid.UUID]:
        from sqlalchemy import select

        from app.models import Delivery

        async with _session(settings) as session:
            if one is not None:
                found = await session.get(Delivery, one)
                if found is None:
                    raise _Refused("no delivery with this id")
                if found.status != "dead":
                    raise _Refused(f"not a dead letter (its status is {found.status})")
                return [one]
            return list(
                (
                    await session.execute(select(Delivery.id).where(Delivery.status == "dead"))
                ).scalars()
            )

    async def replay_one(ident: uuid.UUID) -> bool:
        from app.delivery.outbox import replay_dead_letter
        from app.errors import Conflict
        from app.models.base import utcnow

        async with _session(settings) as session:
            try:
                done = await replay_dead_letter(
                    session, ident, actor=audit.system("cli"), now=utcnow()
                )
            except Conflict as refused:
                typer.echo(f"{ident}: not replayed: {refused.extensions['reason']}", err=True)
                return False
            await session.commit()
            return done

    try:
        targets = asyncio.run(ids())
    except _Refused as refused:
        typer.echo(f"error: {refused}", err=True)
        raise typer.Exit(1) from None
    replayed = 0
    for ident in track(targets, description="replaying", disable=len(targets) < 2):
        replayed += asyncio.run(replay_one(ident))
    typer.echo(f"replayed {replayed} of {len(targets)} dead letter(s)")
    if one is not None and not replayed:
        raise typer.Exit(1)


class _Refused(Exception):
    """A command's one-line refusal."""


db_cli = typer.Typer(help="The database's roles (PostgreSQL).", no_args_is_help=True)
cli.add_typer(db_cli, name="db")


@db_cli.command("grant")
def db_grant(
    role: Annotated[
        str | None,
        typer.Argument(help="The service's role. Default: the user in RUTA_DATABASE_URL."),
    ] = None,
) -> None:
    """Give the service's PostgreSQL role exactly the privileges it needs, and take away
    any other: on the audit tables only SELECT and INSERT. Run as the owner
    (RUTA_MIGRATION_DATABASE_URL, else RUTA_DATABASE_URL); `ruta migrate` runs it itself
    when the two URLs name different roles. Idempotent."""
    from app.migrations import service_role_of

    settings = _settings()
    if settings.is_sqlite:
        typer.echo("error: SQLite has no roles; nothing to grant", err=True)
        raise typer.Exit(2)
    target = role or service_role_of(settings.database_url)
    if not target:
        typer.echo("error: name the role (RUTA_DATABASE_URL names no user)", err=True)
        raise typer.Exit(2)
    try:
        statements = asyncio.run(_grant(settings, target))
    except RoleError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    for statement in statements:
        typer.echo(statement)
    typer.echo(f"privileges granted to {target}", err=True)


keys_cli = typer.Typer(help="Encryption keys.", no_args_is_help=True)
cli.add_typer(keys_cli, name="keys")


@keys_cli.command("rewrap")
def keys_rewrap() -> None:
    """Re-wrap every data key under the current RUTA_ENCRYPTION_KEK (rotation)."""
    settings = _settings()

    async def run() -> int:
        from app.services.keys import rewrap_data_keys

        async with _session(settings) as session:
            count = await rewrap_data_keys(session, settings)
            await session.commit()
            return count

    count = asyncio.run(run())
    typer.echo(f"re-wrapped {count} data key(s) under the current key-encryption key")


DEMO_CLIENTS = (
    ("demo-clinic", "clinic", "Caravana de la Vida"),
    # A partner client belongs to its organisation by the organisation's id.
    ("demo-partner", "partner", "hospital-santa-rosa"),
    ("demo-auditor", "auditor", None),
    ("demo-admin", "admin", None),
)


@cli.command()
def demo(
    keys_file: Annotated[
        str, typer.Option(help="Where the demo keys are kept (development only).")
    ] = ".ruta/demo-keys.env",
) -> None:
    """Create demo API clients for a local walkthrough (development mode only).

    Their keys are written to KEYS_FILE (mode 600) so the README's curl examples can read
    them; outside development mode this command refuses to run.
    """
    settings = _settings()
    if settings.env is not Environment.development:
        typer.echo("error: `ruta demo` runs only with RUTA_ENV=development", err=True)
        raise typer.Exit(2)
    path = Path(keys_file)
    if path.exists():
        typer.echo(f"demo keys already in {path}", err=True)
        return

    async def run() -> list[tuple[str, str]]:
        from app.auth import create_client
        from app.models import Role

        created = []
        async with _session(settings) as session:
            for name, role, organisation in DEMO_CLIENTS:
                _client, key = await create_client(
                    session,
                    secret_key=settings.secret_key.get_secret_value().encode(),
                    name=name,
                    role=Role(role),
                    organisation=organisation,
                    actor=audit.system("cli"),
                )
                created.append((role, key))
            await session.commit()
        return created

    created = asyncio.run(run())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text("".join(f"RUTA_{role.upper()}_KEY={key}\n" for role, key in created))
    typer.echo(f"demo clients created; keys written to {path}", err=True)


def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        # One line, never a traceback: an exception's message can quote what it was
        # handling (a database error's parameters), so only its kind is printed.
        typer.echo(f"error: {_failure(exc)}", err=True)
        sys.exit(1)


def _failure(exc: Exception) -> str:
    """What went wrong, in words an operator can act on, without the exception's text."""
    import socket

    from sqlalchemy.exc import InterfaceError, OperationalError

    unreachable = ConnectionError | TimeoutError | socket.gaierror
    if isinstance(exc, unreachable | OperationalError | InterfaceError):
        return (
            f"the database could not be reached ({type(exc).__name__}); check "
            "RUTA_DATABASE_URL and that the server is up"
        )
    return f"the command failed ({type(exc).__module__}.{type(exc).__qualname__})"


__all__ = ["Environment", "cli", "main"]
