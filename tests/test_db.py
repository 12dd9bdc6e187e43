from __future__ import annotations

import json
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import JSON, bindparam, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import create_engine, json_dumps, on_commit
from app.models import Screening
from tests.strategies import json_values


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


_json_values = json_values(st.text(max_size=8) | st.integers(0, 99))


@given(_json_values)
def test_json_columns_hold_what_the_standard_encoder_would_write(value: object) -> None:
    """orjson writes JSON columns (speed); what is read back is what the standard library's
    encoder would have stored, integer keys turned into strings included."""
    assert json.loads(json_dumps(value)) == json.loads(json.dumps(value))


async def test_a_json_value_round_trips_through_the_database(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    document = {"nombre": "Quispe Mamani", "emoji": "🌄", "n": [1, 2.5, None, True], "7": {}}
    async with sessionmaker() as session:
        stored = (
            await session.execute(select(bindparam("doc", {**document, 8: "x"}, type_=JSON)))
        ).scalar_one()
    assert stored == {**document, "8": "x"}


async def test_on_commit_runs_after_the_outer_commit_and_never_for_a_rollback(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    ran: list[str] = []
    async with sessionmaker() as session:
        await session.execute(text("SELECT 1"))
        on_commit(session, lambda: ran.append("outer"))
        try:
            async with session.begin_nested():
                on_commit(session, lambda: ran.append("rolled back savepoint"))
                raise RuntimeError
        except RuntimeError:
            pass
        async with session.begin_nested():
            on_commit(session, lambda: ran.append("released savepoint"))
        assert ran == []  # a savepoint's release is not a commit
        await session.commit()
    assert ran == ["outer", "released savepoint"]

    async with sessionmaker() as session:
        await session.execute(text("SELECT 1"))
        on_commit(session, lambda: ran.append("rolled back"))
        await session.rollback()
        await session.commit()
    assert ran == ["outer", "released savepoint"]
