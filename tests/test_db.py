from __future__ import annotations

import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import create_engine
from app.models import Screening


async def test_sqlite_runs_in_wal_mode_with_foreign_keys(
    sqlite_template: Path, tmp_path: Path
) -> None:
    path = tmp_path / "wal.db"
    shutil.copyfile(sqlite_template, path)
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar_one() == "wal"
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar_one() == 1
    finally:
        await engine.dispose()


async def test_foreign_keys_are_enforced(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    now = datetime.now(UTC)
    async with sessionmaker() as session:
        session.add(
            Screening(
                id=uuid.uuid4(),
                organisation="x",
                client_id=uuid.uuid4(),
                subject_id=uuid.uuid4(),
                schema_version="1",
                screened_at=now,
                received_at=now,
                fingerprint=b"0" * 32,
                data={},
                personal_fields=[],
            )
        )
        with pytest.raises(IntegrityError):
            await session.flush()
