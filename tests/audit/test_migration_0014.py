"""Revision 0014 stores the events' data compressed (app.compact, dictionary 2): existing
rows are converted both ways, every event reads back with the same data, the chain and its
checkpoints still verify, exports are byte for byte the same, the append-only protection
is in place after each way, and a value that no longer reads is neither hidden nor guessed."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import audit
from app.audit import Action, store
from app.compact import ZSTD_DICT_2, unpack_json
from app.migrations import head_revision
from app.settings import Settings
from tests.audit.conftest import CLINIC, add_events, tamper
from tests.audit.test_migration_0013 import _export_events, _migrate, _refuses_change

#: Every kind of value an event's data holds: booleans, nulls, the largest integers.
VARIED = {
    "ok": False,
    "first_bad_seq": None,
    "from_seq": 1,
    "to_seq": 2**53 - 1,
    "reason": "hash_mismatch",
    "count": 0,
}


async def _records(maker: async_sessionmaker[AsyncSession]) -> list[dict[str, Any]]:
    async with maker() as session:
        records = await store.list_events(session, store.EventFilter(), after_seq=0, limit=10_000)
    return [r.to_json() for r in records]


async def _stored(maker: async_sessionmaker[AsyncSession], column: str) -> list[Any]:
    async with maker() as session:
        query = f"SELECT {column} FROM audit_events ORDER BY seq"  # noqa: S608 (constants)
        return list((await session.execute(text(query))).scalars())


async def test_0014_converts_the_data_up_and_down(
    audited: async_sessionmaker[AsyncSession], settings: Settings, database_url: str
) -> None:
    settings = settings.model_copy(update={"audit_checkpoint_every": 10})
    audit.configure_sessionmaker(audited, settings)
    await add_events(audited, 38, per_transaction=7)
    async with audited() as session:
        await audit.record(session, action=Action.audit_verified, actor=CLINIC, data=VARIED)
        await session.commit()
    await add_events(audited, 6)
    before = await _records(audited)
    exported = await _export_events(audited, settings)
    assert len(before) == 45
    assert before[38]["data"] == VARIED

    await _migrate(audited, database_url, "downgrade", "0013")
    if settings.is_sqlite:
        # JSON text as the service wrote it before 0014, byte for byte.
        expected = [orjson.dumps(r["data"]).decode() for r in before]
        assert await _stored(audited, "data") == expected
    else:
        texts = await _stored(audited, "data::text")
        assert [orjson.loads(t) for t in texts] == [r["data"] for r in before]
        assert await _stored(audited, "jsonb_typeof(data)") == ["object"] * 45
    await _refuses_change(audited)

    await _migrate(audited, database_url, "upgrade", "head")
    stored = [bytes(value) for value in await _stored(audited, "data")]
    assert {value[0] for value in stored} == {ZSTD_DICT_2}
    assert [unpack_json(value) for value in stored] == [r["data"] for r in before]
    assert sum(map(len, stored)) < sum(len(orjson.dumps(r["data"])) for r in before)
    async with audited() as session:
        report = await store.verify_database(session, settings)
    assert report.ok, report
    # The same records, down to the order of data's members (jsonb's on PostgreSQL, before
    # and after; the order written on SQLite).
    assert orjson.dumps(await _records(audited)) == orjson.dumps(before)
    assert await _export_events(audited, settings) == exported
    await _refuses_change(audited)
    # And the log goes on: new events chain onto the converted ones.
    await add_events(audited, 12, per_transaction=4)
    async with audited() as session:
        assert (await store.verify_database(session, settings)).ok


async def test_0014_refuses_to_downgrade_data_that_does_not_read(
    audited: async_sessionmaker[AsyncSession], settings: Settings, database_url: str
) -> None:
    """There is no JSON to write back for it, and writing some would hide the tampering."""
    await add_events(audited, 5)
    damaged = b"\x02\x28\xb5\x2f\xfd"  # a frame's magic number, and nothing after it
    await tamper(
        audited, settings, "UPDATE audit_events SET data = :d WHERE seq = 3", params={"d": damaged}
    )
    with pytest.raises(Exception, match="audit event 3's stored data does not decompress"):
        await _migrate(audited, database_url, "downgrade", "0013")
    async with audited() as session:
        version = (await session.execute(text("SELECT version_num FROM alembic_version"))).scalar()
    # 0014 itself was not undone. PostgreSQL runs the whole downgrade in one transaction,
    # so nothing of it stays; SQLite commits each migration, so those after 0014 are undone.
    assert version == (head_revision() if database_url.startswith("postgresql") else "0014")
    assert bytes((await _stored(audited, "data"))[2]) == damaged
    async with audited() as session:
        report = await store.verify_database(session, settings)
    assert (report.ok, report.first_bad_seq, report.reason) == (False, 3, "data_unreadable")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # jsonb holds only JSON
async def test_0014_keeps_a_text_that_is_not_json_and_it_still_fails(
    audited: async_sessionmaker[AsyncSession], settings: Settings, database_url: str
) -> None:
    """SQLite's JSON column held any text: one that does not parse is kept as it stands,
    compressed, and the event fails verification at its place."""
    await add_events(audited, 5)
    await _migrate(audited, database_url, "downgrade", "0013")
    await tamper(audited, settings, "UPDATE audit_events SET data = '{\"a\": [' WHERE seq = 4")
    await _migrate(audited, database_url, "upgrade", "head")
    async with audited() as session:
        report = await store.verify_database(session, settings)
    assert (report.ok, report.first_bad_seq, report.reason) == (False, 4, "data_unreadable")
    await _migrate(audited, database_url, "downgrade", "0013")
    assert (await _stored(audited, "data"))[3] == '{"a": ['
