from __future__ import annotations

import json
import shutil
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    ColumnDefault,
    Insert,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Uuid,
    bindparam,
    delete,
    insert,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.compact import CompactJSON, Digest
from app.db import bulk_insert, create_engine, insert_new_rows, json_dumps, on_commit
from app.models import Base, Screening
from app.models.base import UTCDateTime
from tests.conftest import INTAKE_TABLES
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


async def test_a_database_error_does_not_quote_the_statement_s_values(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """Whoever prints it (a traceback in a log, an error report), the error names the
    statement but not the values: once, a case code appeared in uvicorn's traceback."""
    async with sessionmaker() as session:
        with pytest.raises(IntegrityError) as excinfo:
            await session.execute(
                text("INSERT INTO partners (id) VALUES (:id)"), {"id": "CANARY-CASE-0001"}
            )
    assert "CANARY" not in str(excinfo.value)
    assert "parameters hidden" in str(excinfo.value)


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


# -- bulk inserts: the PostgreSQL path stores what the generic INSERT stores -----------------

_TEXT = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
_ZONES = st.sampled_from(
    [UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=5, minutes=45))]
)


def _values(column: Column[Any], keys: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Any value the column's type admits, as intake's code would hand it over (``keys``
    for the objects in JSON values)."""
    kind = column.type
    if isinstance(kind, UTCDateTime):
        values: st.SearchStrategy[Any] = st.datetimes(
            min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=_ZONES
        )
    elif isinstance(kind, JSON):
        values = json_values(keys).filter(_no_nul)
    elif isinstance(kind, CompactJSON):
        values = json_values(keys)
    elif isinstance(kind, Digest):
        values = st.binary(min_size=32, max_size=32).map(bytes.hex)
    elif isinstance(kind, Uuid):
        values = st.uuids()
    elif isinstance(kind, LargeBinary):
        values = st.binary(max_size=48)
    elif isinstance(kind, Boolean):
        values = st.booleans()
    elif isinstance(kind, BigInteger):
        values = st.integers(-(2**63), 2**63 - 1)
    elif isinstance(kind, SmallInteger):
        values = st.integers(-(2**15), 2**15 - 1)
    elif isinstance(kind, Integer):
        values = st.integers(-(2**31), 2**31 - 1)
    elif isinstance(kind, String):
        values = st.text(_TEXT, max_size=kind.length or 40)
    else:  # pragma: no cover - a new column type needs a strategy here
        raise AssertionError(f"no strategy for {column.table.name}.{column.name}: {kind!r}")
    return st.none() | values if column.nullable else values


def _no_nul(value: Any) -> bool:
    """PostgreSQL's JSON cannot hold U+0000 (intake refuses it at the door)."""
    return "\\u0000" not in json.dumps(value)


def _written(table: Table) -> list[Column[Any]]:
    """The columns intake hands over: all but a serial id, which the server assigns."""
    return [c for c in table.columns if c is not table.autoincrement_column]


def _rows(table: Table, count: int, keys: st.SearchStrategy[Any]) -> list[dict[str, Any]]:
    """``count`` rows drawn by Hypothesis (edge cases first: empty text, extreme numbers,
    nulls, odd offsets), collected rather than asserted on so they can go to the database."""
    drawn: list[dict[str, Any]] = []
    row = st.fixed_dictionaries({c.name: _values(c, keys) for c in _written(table)})

    @hypothesis_settings(max_examples=count, database=None, deadline=None)
    @given(row)
    def collect(value: dict[str, Any]) -> None:
        drawn.append(value)

    collect()
    return drawn


def _scratch(table: Table) -> Table:
    """The table's columns, types and defaults, without its constraints (rows drawn at
    random reference nothing and repeat values)."""
    return Table(
        f"scratch_{table.name}",
        MetaData(),
        *(
            Column(
                c.name,
                c.type,
                primary_key=c is table.autoincrement_column,
                nullable=True,
                default=c.default.arg if isinstance(c.default, ColumnDefault) else None,
            )
            for c in table.columns
        ),
    )


async def _stored(session: AsyncSession, table: Table) -> list[tuple[str, ...]]:
    """Every row as the server's own text of each value, telling SQL NULL from JSON null."""
    shown = ", ".join(
        f"CASE WHEN {c.name} IS NULL THEN 'SQL NULL' ELSE CAST({c.name} AS text) END"
        for c in _written(table)
    )
    rows = await session.execute(text(f"SELECT {shown} FROM {table.name}"))  # noqa: S608
    return sorted(tuple(row) for row in rows)


@pytest.mark.parametrize("name", INTAKE_TABLES)
@pytest.mark.parametrize("keys", ["text keys", "integer keys too"])
async def test_rows_sent_as_one_json_document_are_stored_as_the_generic_insert_stores_them(
    postgres_url: str, name: str, keys: str
) -> None:
    """On PostgreSQL, bulk_insert sends a group's rows as one JSON document. For every
    column of every table intake writes, what is stored must be what SQLAlchemy's generic
    INSERT stores: the same instants whatever the offset, bytes, JSON null kept apart from
    SQL NULL, numbers at the edges, any text, and integer keys in JSON objects written as
    strings (these take orjson's slower option)."""
    original = Base.metadata.tables[name]
    scratch = _scratch(original)
    key_values: st.SearchStrategy[Any] = st.text(_TEXT, max_size=8)
    if keys == "integer keys too":
        key_values = st.one_of(key_values, st.integers(0, 99))
    rows = _rows(original, 80, key_values)
    engine = create_engine(postgres_url)
    try:
        async with engine.connect() as conn:
            await conn.execute(
                text(f"CREATE TABLE {scratch.name} (LIKE {name} INCLUDING DEFAULTS)")
            )
            await conn.commit()
        async with AsyncSession(engine) as session:
            fast, parameters = bulk_insert("postgresql", scratch, rows)
            assert isinstance(parameters, dict), "the JSON path was not taken"
            await session.execute(fast, parameters)
            via_json = await _stored(session, scratch)
            await session.execute(delete(scratch))
            await session.execute(insert(scratch), rows)
            via_insert = await _stored(session, scratch)
        assert len(via_json) == len(rows)
        assert via_json == via_insert
    finally:
        await engine.dispose()


async def test_insert_new_rows_skips_taken_keys_and_returns_the_ids_it_inserted(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    subjects = Base.metadata.tables["subjects"]
    now = datetime.now(UTC)

    def subject(case_code: str) -> dict[str, Any]:
        return {
            "id": uuid.uuid4(),
            "organisation": "Caravana de la Vida",
            "case_code": case_code,
            "wrapped_dek": b"\x00key",
            "kek_id": "k1",
            "created_at": now,
        }

    first = [subject("A-1"), subject("A-2")]
    second = [subject("A-2"), subject("A-3"), subject("A-1")]
    async with sessionmaker() as session:
        assert await insert_new_rows(
            session, subjects, first, unique=("organisation", "case_code")
        ) == {row["id"] for row in first}
        assert await insert_new_rows(
            session, subjects, second, unique=("organisation", "case_code")
        ) == {second[1]["id"]}
        stored = (await session.execute(select(subjects.c.case_code, subjects.c.id))).all()
    assert dict(stored) == {"A-1": first[0]["id"], "A-2": first[1]["id"], "A-3": second[1]["id"]}


def test_the_json_path_refuses_what_the_generic_insert_refuses() -> None:
    """A naive datetime would be read in the server's time zone; rows with different
    columns would leave some NULL. Both are refused before anything is sent."""
    events = Base.metadata.tables["referral_events"]
    row = {
        "referral_id": uuid.uuid4(),
        "from_status": None,
        "to_status": "sent",
        "reason": None,
        "partner_id": None,
        "actor_role": "system",
        "actor_id": None,
        "at": datetime.now(UTC),
    }
    assert set(row) == {c.name for c in _written(events)}
    with pytest.raises(ValueError, match="naive datetime"):
        bulk_insert("postgresql", events, [row, {**row, "at": datetime(2026, 1, 1)}])
    with pytest.raises(ValueError, match="differ in their columns"):
        bulk_insert("postgresql", events, [row, {k: v for k, v in row.items() if k != "reason"}])


def test_a_left_out_column_with_a_python_default_takes_the_generic_insert() -> None:
    """The server cannot apply SQLAlchemy's Python-side defaults: leaving such a column out
    falls back to the generic INSERT, which applies them."""
    decisions = Base.metadata.tables["decisions"]
    assert decisions.c.created_at.default is not None
    row = {
        "id": uuid.uuid4(),
        "screening_id": uuid.uuid4(),
        "rule_set_version": "v1",
        "rule_set_hash": "h",
        "non_identifying_notification": False,
        "trace": {},
    }
    statement, parameters = bulk_insert("postgresql", decisions, [row])
    assert isinstance(statement, Insert)
    assert parameters == [row]
    statement, parameters = bulk_insert("postgresql", decisions, [{**row, "created_at": None}])
    assert not isinstance(statement, Insert)
