"""``ruta partners import FILE`` (YAML, JSON or CSV) and ``ruta partners export``.

Export never includes secrets; import validates the whole file before it changes anything
and then syncs it with the same precedence as at start (see app/partners/service.py).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from app.partners.directory import DirectoryError, directory_env, load_directory
from app.settings import Settings, get_settings

partners_cli = typer.Typer(help="The partner directory.", no_args_is_help=True)


def _settings() -> Settings:
    try:
        return get_settings()
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@partners_cli.command("import")
def import_directory(
    file: Annotated[
        Path,
        typer.Argument(
            help="A directory file: YAML, JSON, or CSV (one partner a row; a spreadsheet "
            "saved as CSV).",
            exists=True,
        ),
    ],
) -> None:
    """Validate FILE and sync its partners into the database. Every error names the
    partner (the row and column, for CSV) and never quotes a value."""
    settings = _settings()
    try:
        directory = load_directory(
            file, relaxed=settings.relaxed_network, env=directory_env(settings.public_base_url)
        )
    except DirectoryError as exc:
        typer.echo(f"error: {file}:", err=True)
        for line in exc.errors:
            typer.echo(f"  {line}", err=True)
        raise typer.Exit(2) from None

    async def run() -> Any:
        from app.db import create_engine, create_sessionmaker
        from app.models.base import utcnow
        from app.partners.service import sync_directory

        engine = create_engine(settings.database_url)
        try:
            async with create_sessionmaker(engine)() as session:
                report = await sync_directory(session, settings, directory, now=utcnow())
                await session.commit()
                return report
        finally:
            await engine.dispose()

    report = asyncio.run(run())
    typer.echo(
        f"created {len(report.created)}, updated {len(report.updated)}, "
        f"unchanged {len(report.unchanged)}",
        err=True,
    )
    for item in report.kept_overrides:
        typer.echo(f"kept admin change over the file: {item}", err=True)
    for pid in report.not_in_file:
        typer.echo(f"in the database but not in the file (left as is): {pid}", err=True)


def export_document(partners: list[Any]) -> dict[str, Any]:
    """The directory document for ``partners`` (directory models), without secrets."""
    items = []
    for partner in partners:
        data = partner.model_dump(mode="json", exclude={"endpoint": {"secrets"}})
        items.append(data)
    return {"version": 1, "partners": items}


@partners_cli.command("export")
def export_directory(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
) -> None:
    """Write the database's directory as YAML. Signing secrets are never exported."""
    settings = _settings()

    async def run() -> list[Any]:
        from app.db import create_engine, create_sessionmaker
        from app.partners.service import directory_partners

        engine = create_engine(settings.database_url)
        try:
            async with create_sessionmaker(engine)() as session:
                return await directory_partners(session)
        finally:
            await engine.dispose()

    text = yaml.safe_dump(export_document(asyncio.run(run())), sort_keys=False, allow_unicode=True)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}", err=True)
