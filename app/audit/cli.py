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
from typing import Annotated, Any, NoReturn, TypeVar

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
    try:
        text = path.read_text() if path.is_file() else value
    except (OSError, UnicodeDecodeError):
        _unreadable(f"cannot read the public key file {value}")
    try:
        return load_public_key(text)
    except ValueError:
        _unreadable("--public-key is not an Ed25519 key (base64 or PEM)")


def _unreadable(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_UNREADABLE)


#: ``ruta audit verify``'s exit codes (also in docs/audit.md).
EXIT_INTACT, EXIT_NOT_INTACT, EXIT_UNREADABLE = 0, 1, 2

VERIFY_HELP = f"""Verify the chain: an export offline (with --public-key), or the database.

Prints the JSON report on stdout and a one-line verdict on stderr. An export must start
with its signed header and end with the checkpoint the service signed over its last
event; it is held to the range its header claims. Checkpoints you or a witness kept
(--checkpoints) are checked too, and the report names the first one the events
contradict; one outside the export's range is listed as unchecked, with what to do.

Exit codes: {EXIT_INTACT} intact; {EXIT_NOT_INTACT} not intact (the report says where and \
why); {EXIT_UNREADABLE} unreadable or not an export (missing file, empty or binary file, an \
error response saved instead of an export, a CSV without the export's columns, a bad key).
"""


def _held(paths: list[Path] | None) -> list[Any]:
    from app.audit.reader import ExportUnreadable, read_checkpoints

    held: list[Any] = []
    for path in paths or []:
        try:
            with path.open("rb") as handle:
                held += read_checkpoints(handle, str(path))
        except OSError as exc:
            _unreadable(f"cannot read {path}: {exc.strerror or exc}")
        except ExportUnreadable as exc:
            _unreadable(f"{path}: {exc}")
    return held


@audit_cli.command(help=VERIFY_HELP)
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
        typer.Option(help="Checkpoint files you or a witness kept (NDJSON); repeatable."),
    ] = None,
    proof: Annotated[
        Path | None,
        typer.Option(help="A proof bundle from `ruta audit prove` or /v1/audit/proofs/*."),
    ] = None,
) -> None:
    from app.audit.reader import ExportUnreadable, sniff_format, verify_export_file

    held = _held(checkpoints)
    if proof is not None:
        _verify_proof(proof, public_key, held)
        return
    if export is None:
        from app.audit.store import verify_database

        settings = _settings()
        report = _with_session(settings, lambda s: verify_database(s, settings, held=held))
    else:
        if public_key is None:
            _unreadable(
                "offline verification needs --public-key: the key in the export's header is "
                "only a hint, never trusted"
            )
        key = _read_key(public_key)
        try:
            report = verify_export_file(export, sniff_format(export), key, held)
        except ExportUnreadable as exc:
            _unreadable(f"{export}: {exc}")
    typer.echo(json.dumps(report.to_json(), indent=2))
    typer.echo(report.verdict(), err=True)
    for advice in report.advice:
        typer.echo(f"note: {advice}", err=True)
    if not report.ok:
        raise typer.Exit(EXIT_NOT_INTACT)


def _verify_proof(path: Path, public_key: str | None, held: list[Any]) -> None:
    import orjson

    from app.audit.proofs import ProofUnreadable, verify_bundle

    if public_key is None:
        _unreadable("checking a proof needs --public-key")
    key = _read_key(public_key)
    try:
        bundle = orjson.loads(path.read_bytes())
        report = verify_bundle(bundle, key, held)
    except OSError as exc:
        _unreadable(f"cannot read {path}: {exc.strerror or exc}")
    except (orjson.JSONDecodeError, ProofUnreadable) as exc:
        _unreadable(f"{path}: not a proof bundle ({exc})")
    typer.echo(json.dumps(report.to_json(), indent=2))
    typer.echo(report.verdict(), err=True)
    if not report.ok:
        raise typer.Exit(EXIT_NOT_INTACT)


prove_cli = typer.Typer(
    help="Write a proof bundle to check offline with `ruta audit verify --proof`.",
    no_args_is_help=True,
)
audit_cli.add_typer(prove_cli, name="prove")


def _write_out(text: str, output: Path | None, what: str) -> None:
    """``text`` to ``output``, or to stdout without one."""
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        typer.echo(f"{what} written to {output}", err=True)


def _write_bundle(bundle: dict[str, Any], output: Path | None) -> None:
    _write_out(json.dumps(bundle, indent=2, ensure_ascii=False) + "\n", output, "proof")


@prove_cli.command("inclusion")
def prove_inclusion(
    referral_id: Annotated[str | None, typer.Option(help="A referral: all its events.")] = None,
    screening_id: Annotated[
        str | None, typer.Option(help="A screening: its disclosures (forwarded, read).")
    ] = None,
    size: Annotated[
        int | None, typer.Option(min=1, help="A checkpointed size (default: the head, now).")
    ] = None,
    output: Annotated[Path | None, typer.Option(help="Write here (default: stdout).")] = None,
) -> None:
    """The events and their inclusion proofs against a signed checkpoint."""
    import uuid

    from app.audit.proofs import inclusion_bundle

    try:
        referral = uuid.UUID(referral_id) if referral_id else None
        screening = uuid.UUID(screening_id) if screening_id else None
    except ValueError:
        _unreadable("--referral-id and --screening-id are UUIDs")
    if (referral is None) == (screening is None):
        _unreadable("give --referral-id or --screening-id")
    settings = _settings()
    bundle = _cli_call(
        settings,
        lambda s: inclusion_bundle(
            s, settings, referral_id=referral, screening_id=screening, size=size
        ),
    )
    _write_bundle(bundle, output)


@prove_cli.command("consistency")
def prove_consistency(
    from_size: Annotated[int, typer.Option(min=1, help="The size of the checkpoint you kept.")],
    to_size: Annotated[
        int | None, typer.Option(min=1, help="A checkpointed size (default: the head, now).")
    ] = None,
    output: Annotated[Path | None, typer.Option(help="Write here (default: stdout).")] = None,
) -> None:
    """The proof that the log signed now extends the one of --from-size events."""
    from app.audit.proofs import consistency_bundle

    settings = _settings()
    bundle = _cli_call(
        settings,
        lambda s: consistency_bundle(s, settings, from_size=from_size, to_size=to_size),
    )
    _write_bundle(bundle, output)


def _cli_call(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run ``work``; a problem it raises (no such checkpoint…) is an error line, exit 1."""
    from app.errors import RutaError

    try:
        return _with_session(settings, work)
    except RutaError as exc:
        typer.echo(f"error: {exc.detail or exc.title}", err=True)
        raise typer.Exit(1) from None


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
    from app.audit.export import ChainBroken, chunks, prepare_export

    settings = _settings()
    since = since.replace(tzinfo=UTC) if since and since.tzinfo is None else since
    until = until.replace(tzinfo=UTC) if until and until.tzinfo is None else until

    async def work(session: AsyncSession) -> tuple[int, int]:
        plan = await prepare_export(
            session,
            settings,
            actor=audit.system("cli"),
            fmt=format.value,
            from_seq=from_seq,
            to_seq=to_seq,
            since=since,
            until=until,
        )
        total = max(0, plan.to_seq - plan.from_seq + 1)
        await session.commit()
        with (
            output.open("wb") as handle,
            typer.progressbar(length=total, label="exporting", file=sys.stderr) as bar,
        ):
            async for chunk in chunks(session, plan, format.value):
                handle.write(chunk)
                bar.update(chunk.count(b"\n"))
        if plan.failure is not None:
            typer.echo(f"error: {plan.failure.verdict()}; the export is not signed", err=True)
            raise typer.Exit(1)
        return plan.from_seq, plan.to_seq

    try:
        low, high = _with_session(settings, work)
    except ChainBroken as exc:
        typer.echo(f"error: {exc.detail} ({exc.extensions.get('reason')})", err=True)
        raise typer.Exit(1) from None
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
    _write_out(lines, output, f"{lines.count(chr(10))} checkpoints")


@audit_cli.command("public-key")
def public_key_command(
    pem: Annotated[bool, typer.Option(help="PEM instead of raw base64.")] = False,
) -> None:
    """Print the Ed25519 public key that verifies checkpoints (safe to publish)."""
    from app.audit import note
    from app.audit.chain import public_key_b64, public_key_pem
    from app.audit.writer import AuditConfig

    settings = _settings()
    signer = AuditConfig.from_settings(settings).signer
    typer.echo(f"key id {signer.key_id}, log origin {signer.origin}", err=True)
    typer.echo(f"note verifier key {note.verifier_key(signer.origin, signer.public_key)}", err=True)
    typer.echo(
        public_key_pem(signer.public_key).rstrip() if pem else public_key_b64(signer.public_key)
    )
