"""``ruta audit``: verify (online or offline), export, keep checkpoints, show the public key.

Offline verification needs only an export file and the public key; no database, no
settings.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from app.settings import Settings, get_settings

audit_cli = typer.Typer(
    help="The tamper-evident audit trail: verify, export, checkpoints, public key.",
    no_args_is_help=True,
)

T = TypeVar("T")


class ExportFormat(StrEnum):
    ndjson = "ndjson"
    csv = "csv"


def _settings() -> Settings:
    try:
        return get_settings()
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _with_session(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    from app import audit
    from app.db import create_engine, create_sessionmaker

    async def run() -> T:
        engine = create_engine(settings.database_url)
        try:
            maker = create_sessionmaker(engine)
            audit.configure_sessionmaker(maker, settings)
            async with maker() as session:
                result = await work(session)
                await session.commit()
                return result
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _read_key(value: str) -> Any:
    from app.audit.chain import load_public_key

    path = Path(value)
    text = path.read_text() if path.exists() else value
    try:
        return load_public_key(text)
    except ValueError:
        typer.echo("error: --public-key is not an Ed25519 key (base64 or PEM)", err=True)
        raise typer.Exit(2) from None


def _detect_format(path: Path) -> ExportFormat:
    with path.open() as handle:
        first = handle.readline()
    return ExportFormat.ndjson if first.lstrip().startswith("{") else ExportFormat.csv


@audit_cli.command()
def verify(
    export: Annotated[
        Path | None,
        typer.Argument(help="An export file (NDJSON or CSV). Without it: verify the database."),
    ] = None,
    public_key: Annotated[
        str | None,
        typer.Option(help="The public key (base64 or PEM, or a file holding it). Offline only."),
    ] = None,
    checkpoints: Annotated[
        list[Path] | None,
        typer.Option(help="Checkpoint files you kept (NDJSON); repeatable."),
    ] = None,
) -> None:
    """Verify the chain. Prints a JSON report; exits 1 if the chain is not intact."""
    from app.audit.export import read_checkpoints, verify_export_file

    held = []
    for path in checkpoints or []:
        with path.open() as handle:
            held += read_checkpoints(handle)
    if export is None:
        from app.audit.store import verify_database

        settings = _settings()
        report = _with_session(settings, lambda s: verify_database(s, settings, held=held))
    else:
        if public_key is None:
            typer.echo(
                "error: offline verification needs --public-key: the key in the export's "
                "header is only a hint, never trusted",
                err=True,
            )
            raise typer.Exit(2)
        key = _read_key(public_key)
        report = verify_export_file(export, _detect_format(export).value, key, held)
    typer.echo(json.dumps(report.to_json(), indent=2))
    if not report.ok:
        typer.echo(f"NOT INTACT: first bad seq {report.first_bad_seq} ({report.reason})", err=True)
        raise typer.Exit(1)
    typer.echo(f"intact: {report.events_checked} events, up to seq {report.last_seq}", err=True)


@audit_cli.command("export")
def export_command(
    output: Annotated[Path, typer.Option(help="Where to write the export.")],
    format: Annotated[ExportFormat, typer.Option(help="ndjson or csv.")] = ExportFormat.ndjson,
    from_seq: Annotated[int | None, typer.Option(min=1)] = None,
    to_seq: Annotated[int | None, typer.Option(min=1)] = None,
    since: Annotated[datetime | None, typer.Option(help="UTC; events at or after.")] = None,
    until: Annotated[datetime | None, typer.Option(help="UTC; events before.")] = None,
) -> None:
    """Export a contiguous range of the chain, ending with a freshly signed checkpoint."""
    from datetime import UTC

    from app import audit
    from app.audit import Action
    from app.audit.export import chunks, plan_export
    from app.audit.store import seq_range

    settings = _settings()
    since = since.replace(tzinfo=UTC) if since and since.tzinfo is None else since
    until = until.replace(tzinfo=UTC) if until and until.tzinfo is None else until

    async def work(session: AsyncSession) -> tuple[int, int]:
        low, high = await seq_range(
            session, from_seq=from_seq, to_seq=to_seq, since=since, until=until
        )
        plan = await plan_export(session, settings, from_seq=low, to_seq=high)
        total = max(0, high - low + 1)
        await session.commit()
        with (
            output.open("wb") as handle,
            typer.progressbar(length=total, label="exporting", file=sys.stderr) as bar,
        ):
            async for chunk in chunks(session, plan, format.value):
                handle.write(chunk)
                bar.update(chunk.count(b"\n"))
        await audit.record(
            session,
            action=Action.audit_exported,
            actor=audit.system("cli"),
            data={"format": format.value, "from_seq": low, "to_seq": high},
        )
        return low, high

    low, high = _with_session(settings, work)
    typer.echo(f"exported seq {low}..{high} to {output}", err=True)


@audit_cli.command("checkpoints")
def checkpoints_command(
    output: Annotated[
        Path | None, typer.Option(help="Write NDJSON here (default: stdout).")
    ] = None,
    sign_now: Annotated[
        bool, typer.Option(help="First sign a checkpoint at the current head.")
    ] = True,
) -> None:
    """Export the signed checkpoints, to keep outside the service (one JSON per line)."""
    from app import audit
    from app.audit.store import checkpoints as stored_checkpoints

    settings = _settings()

    async def work(session: AsyncSession) -> list[dict[str, Any]]:
        if sign_now:
            await audit.checkpoint_if_due(session, settings, force=True)
            await session.flush()
        return [c.to_json() for c in await stored_checkpoints(session)]

    lines = "".join(json.dumps(c, sort_keys=True) + "\n" for c in _with_session(settings, work))
    if output is None:
        typer.echo(lines, nl=False)
    else:
        output.write_text(lines)
        typer.echo(f"{lines.count(chr(10))} checkpoints written to {output}", err=True)


@audit_cli.command("public-key")
def public_key_command(
    pem: Annotated[bool, typer.Option(help="PEM instead of raw base64.")] = False,
) -> None:
    """Print the Ed25519 public key that verifies checkpoints (safe to publish)."""
    from app.audit.chain import Signer, key_id_of, public_key_b64, public_key_pem

    settings = _settings()
    signer = Signer(settings.audit_signing_seed())
    typer.echo(f"key id {key_id_of(signer.public_key)}", err=True)
    typer.echo(
        public_key_pem(signer.public_key).rstrip() if pem else public_key_b64(signer.public_key)
    )
