"""Alembic is the only way a schema comes to exist; it must match the models on both engines."""

from __future__ import annotations

import asyncio

from alembic import command
from sqlalchemy import text

from app.db import create_engine
from app.migrations import alembic_config, head_revision


def test_upgrade_head_then_check_is_clean(database_url: str) -> None:
    # The fixture's database was built by `alembic upgrade head`; `check` raises on any drift.
    command.check(alembic_config(database_url))


def test_downgrade_to_base_and_back(database_url: str) -> None:
    config = alembic_config(database_url)
    command.downgrade(config, "base")
    command.upgrade(config, "head")
    command.check(config)

    async def current() -> str | None:
        engine = create_engine(database_url)
        try:
            async with engine.connect() as conn:
                result = await conn.execute(text("SELECT version_num FROM alembic_version"))
                return result.scalar_one_or_none()
        finally:
            await engine.dispose()

    assert asyncio.run(current()) == head_revision()
