"""Alembic environment: async engines (asyncpg, aiosqlite), one schema for both engines."""

from __future__ import annotations

import asyncio
import os
from typing import Any, Literal

import sqlalchemy as sa
from alembic import context
from sqlalchemy.engine import Connection

from app.compact import CompactJSON, Digest
from app.db import create_engine
from app.models import Base
from app.models.base import UTCDateTime
from app.settings import normalise_database_url

config = context.config
target_metadata = Base.metadata


def database_url() -> str:
    """``-x url=…``, else the URL ``ruta migrate`` passes, else the owner's
    (RUTA_MIGRATION_DATABASE_URL), else RUTA_DATABASE_URL: migrations run as the role that
    owns the schema (docs/operations.md, Database roles)."""
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        url = os.environ.get("RUTA_MIGRATION_DATABASE_URL") or os.environ.get(
            "RUTA_DATABASE_URL", "sqlite+aiosqlite:///./ruta.db"
        )
    return normalise_database_url(url)


def _render_item(type_: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    """Render Ruta's column types as plain SQLAlchemy types, so migrations never import app
    code that may change after they are written."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if type_ == "type" and isinstance(obj, CompactJSON | Digest):
        return "sa.LargeBinary()"
    if type_ == "type" and isinstance(obj, sa.JSON) and obj._variant_mapping:
        autogen_context.imports.add("from sqlalchemy.dialects import postgresql")
        return 'sa.JSON().with_variant(postgresql.JSONB(), "postgresql")'
    return False


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        compare_server_default=True,
        render_item=_render_item,
    )
    with context.begin_transaction():
        context.run_migrations()
        if connection.dialect.name == "sqlite":
            # Foreign keys are off while migrating (below); what they protect is checked
            # once at the end instead, and a break fails the run.
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
            if broken:
                raise RuntimeError(f"foreign keys broken by the migration: {broken[:5]}")


def _sqlite_foreign_keys_off(dbapi_connection: Any, _record: Any) -> None:
    """SQLite rebuilds a table to change a column (batch mode): dropping the old table
    would fail on the rows that reference it while foreign keys are enforced, and the pragma
    is ignored inside a transaction, so it is set as the connection opens (after app.db's
    own set-up turned it on)."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=OFF")
    cursor.close()


async def _run_online() -> None:
    engine = create_engine(database_url())
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine.sync_engine, "connect", _sqlite_foreign_keys_off)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_configure)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_offline() -> None:
    context.configure(url=database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(_run_online())
