"""Alembic is the only way a schema comes to exist; it must match the models on both engines."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from alembic import command
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

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


def test_0005_adds_the_previous_key_and_keeps_clients_both_ways(database_url: str) -> None:
    """0005 adds the previous-key columns; clients survive the upgrade and the downgrade
    (SQLite rebuilds the table for the constraints), and a half-set previous key is refused."""
    config = alembic_config(database_url)
    command.downgrade(config, "0004")
    client = uuid.uuid4()

    async def execute(sql: str, **params: object) -> list[tuple[object, ...]]:
        engine = create_engine(database_url)
        try:
            async with engine.begin() as conn:
                result = await conn.execute(text(sql), params)
                return [tuple(row) for row in result] if result.returns_rows else []
        finally:
            await engine.dispose()

    def columns() -> set[str]:
        async def run() -> set[str]:
            engine = create_engine(database_url)
            try:
                async with engine.connect() as conn:
                    return await conn.run_sync(
                        lambda sync: {c["name"] for c in inspect(sync).get_columns("api_clients")}
                    )
            finally:
                await engine.dispose()

        return asyncio.run(run())

    previous = {"previous_key_id", "previous_key_hash", "previous_key_expires_at"}
    assert not previous & columns()
    asyncio.run(
        execute(
            "INSERT INTO api_clients (id, name, role, organisation, key_id, key_hash, "
            "created_at) VALUES (:id, 'tablet', 'clinic', 'Caravana', 'abcdefghijkm', :h, :at)",
            id=client.hex if database_url.startswith("sqlite") else client,
            h=b"\1" * 32,
            at=datetime(2026, 11, 30, tzinfo=UTC),
        )
    )
    command.upgrade(config, "head")
    assert previous <= columns()
    assert asyncio.run(execute("SELECT key_id, previous_key_id FROM api_clients")) == [
        ("abcdefghijkm", None)
    ]
    with pytest.raises(IntegrityError):
        asyncio.run(execute("UPDATE api_clients SET previous_key_id = 'bcdefghijkmn'"))
    asyncio.run(
        execute(
            "UPDATE api_clients SET previous_key_id = 'bcdefghijkmn', previous_key_hash = :h, "
            "previous_key_expires_at = :at",
            h=b"\2" * 32,
            at=datetime(2026, 12, 1, tzinfo=UTC),
        )
    )
    command.downgrade(config, "0004")
    assert not previous & columns()
    assert asyncio.run(execute("SELECT key_id FROM api_clients")) == [("abcdefghijkm",)]
    command.upgrade(config, "head")
    command.check(config)
