"""Revision 0013 stores the events' hashes as 32 bytes: existing rows are converted both
ways, every event reads back with the same hex hash, the chain and its checkpoints still
verify, exports are unchanged, and the append-only protection is in place after each way."""

from __future__ import annotations

import asyncio

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import audit
from app.audit import store
from app.audit.export import chunks, prepare_export
from app.migrations import alembic_config
from app.settings import Settings
from tests.audit.conftest import CLINIC, add_events, tamper


async def _migrate(maker: async_sessionmaker[AsyncSession], url: str, how: str, to: str) -> None:
    bind = maker.kw["bind"]
    await bind.dispose()  # no pooled connection keeps statements prepared on the old types
    await asyncio.to_thread(getattr(command, how), alembic_config(url), to)
    await bind.dispose()


async def _hashes(maker: async_sessionmaker[AsyncSession]) -> list[tuple[int, str, str]]:
    async with maker() as session:
        records = await store.list_events(session, store.EventFilter(), after_seq=0, limit=10_000)
    return [(r.seq, r.prev_hash, r.hash) for r in records]


async def _export_events(maker: async_sessionmaker[AsyncSession], settings: Settings) -> bytes:
    async with maker() as session:
        plan = await prepare_export(session, settings, actor=CLINIC, fmt="ndjson", to_seq=40)
        await session.rollback()  # not recorded: the log stays as it was
        body = b"".join([c async for c in chunks(session, plan, "ndjson")])
    assert plan.final is not None, plan.failure
    return b"\n".join(line for line in body.splitlines() if line.startswith(b'{"type":"event"'))


async def _refuses_change(maker: async_sessionmaker[AsyncSession]) -> None:
    for statement in ("UPDATE audit_events SET data = data", "DELETE FROM audit_events"):
        async with maker() as session:
            with pytest.raises(DBAPIError, match="append-only"):
                await session.execute(text(statement))
            await session.rollback()


async def test_0013_converts_the_hashes_up_and_down(
    audited: async_sessionmaker[AsyncSession], settings: Settings, database_url: str
) -> None:
    settings = settings.model_copy(update={"audit_checkpoint_every": 10})
    audit.configure_sessionmaker(audited, settings)
    await add_events(audited, 45, per_transaction=7)
    before = await _hashes(audited)
    exported = await _export_events(audited, settings)
    assert len(before) == 45

    await _migrate(audited, database_url, "downgrade", "0012")
    async with audited() as session:
        stored = (
            await session.execute(
                text("SELECT seq, prev_hash, hash FROM audit_events ORDER BY seq")
            )
        ).all()
    assert [tuple(row) for row in stored] == before  # hex text again, the same values
    await _refuses_change(audited)

    await _migrate(audited, database_url, "upgrade", "head")
    async with audited() as session:
        raw = (await session.execute(text("SELECT hash FROM audit_events ORDER BY seq"))).scalars()
        assert [bytes(h) for h in raw] == [bytes.fromhex(h) for _, _, h in before]
        report = await store.verify_database(session, settings)
    assert report.ok, report
    assert await _hashes(audited) == before
    assert await _export_events(audited, settings) == exported
    await _refuses_change(audited)
    # And the log goes on: new events chain onto the converted ones.
    await add_events(audited, 12, per_transaction=4)
    async with audited() as session:
        assert (await store.verify_database(session, settings)).ok


async def test_0013_refuses_to_convert_a_hash_not_in_its_one_form(
    audited: async_sessionmaker[AsyncSession], settings: Settings, database_url: str
) -> None:
    """An upper-case hash fails verification; converted to bytes it would pass again."""
    await add_events(audited, 5)
    await _migrate(audited, database_url, "downgrade", "0012")
    await tamper(audited, settings, "UPDATE audit_events SET hash = upper(hash) WHERE seq = 3")
    with pytest.raises(Exception, match="audit event 3 has a hash that is not"):
        await _migrate(audited, database_url, "upgrade", "head")
    async with audited() as session:
        version = (await session.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        kept = (
            await session.execute(text("SELECT hash FROM audit_events WHERE seq = 3"))
        ).scalar_one()
    assert version == "0012"
    assert kept == kept.upper()
