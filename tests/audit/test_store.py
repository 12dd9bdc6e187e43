"""The audit tables in a real database: append-only triggers, the 10,000-event chain through
the writer, exports verified offline, tampering found online, and no forks under
concurrency on PostgreSQL."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import audit
from app.audit import Action
from app.audit.chain import load_public_key
from app.audit.export import chunks, plan_export
from app.audit.reader import read_checkpoints, read_export, verify_export
from app.audit.store import checkpoints, head, seq_range, verify_database
from app.db import create_engine, create_sessionmaker
from app.models import AuditCheckpoint, AuditEvent
from app.settings import Environment, Settings
from tests.audit.conftest import CLINIC, STORED_EMPTY, add_events
from tests.audit.conftest import tamper as _tamper
from tests.conftest import TEST_SECRET, _admin_execute, _db_url


async def _export(
    maker: async_sessionmaker[AsyncSession], settings: Settings, fmt: str = "ndjson"
) -> str:
    async with maker() as session:
        head_seq, _ = await head(session)
        plan = await plan_export(session, settings, from_seq=1, to_seq=head_seq)
        parts = [chunk async for chunk in chunks(session, plan, fmt)]  # type: ignore[arg-type]
    return b"".join(parts).decode()


def _public_key(settings: Settings) -> Ed25519PublicKey:
    return audit.AuditConfig.from_settings(settings).signer.public_key


@pytest.mark.parametrize("table", ["audit_events", "audit_checkpoints"])
async def test_database_refuses_update_and_delete(
    audited: async_sessionmaker[AsyncSession], settings: Settings, table: str
) -> None:
    await add_events(audited, 3)
    async with audited() as session:
        await audit.checkpoint_if_due(session, settings, force=True)
        await session.commit()
    statements = [f"UPDATE {table} SET hash = hash", f"DELETE FROM {table}"]  # noqa: S608
    if not settings.is_sqlite:
        statements.append(f"TRUNCATE {table}")
    for statement in statements:
        async with audited() as session:
            with pytest.raises(DBAPIError, match="append-only"):
                await session.execute(text(statement))
            await session.rollback()
    async with audited() as session:
        model = AuditEvent if table == "audit_events" else AuditCheckpoint
        count = await session.execute(select(func.count()).select_from(model))
        assert count.scalar_one() >= 1


async def test_ten_thousand_events_through_the_writer_verify_online_and_offline(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    settings = settings.model_copy(update={"audit_checkpoint_every": 1000})
    audit.configure_sessionmaker(sessionmaker, settings)
    await add_events(sessionmaker, 10_000, per_transaction=1000)
    async with sessionmaker() as session:
        report = await verify_database(session, settings)
        held = await checkpoints(session)
    assert report.ok, report
    assert report.last_seq == 10_000
    assert [c.seq for c in held] == list(range(1000, 10_001, 1000))

    ndjson = await _export(sessionmaker, settings)
    export = read_export(io.StringIO(ndjson))
    assert len(export.events) == 10_000
    offline = verify_export(export, _public_key(settings))
    assert offline.ok, offline

    # An attacker with the database owner's rights drops the trigger and edits an event.
    await _tamper(
        sessionmaker,
        settings,
        "UPDATE audit_events SET data = :d WHERE seq = 5000",
        params={"d": STORED_EMPTY},
    )
    async with sessionmaker() as session:
        report = await verify_database(session, settings)
    assert (report.ok, report.first_bad_seq, report.reason) == (False, 5000, "hash_mismatch")
    # The service checks what it exports: it stops there, and signs nothing.
    tampered = read_export(io.StringIO(await _export(sessionmaker, settings)))
    assert tampered.final is None
    assert tampered.error is not None
    assert [e.seq for e in tampered.events][-1] == 4999
    report = verify_export(tampered, _public_key(settings))
    assert (report.ok, report.first_bad_seq, report.reason) == (False, 5000, "hash_mismatch")

    # Deleting the tail is caught by the checkpoints the auditor kept from the first export.
    kept = read_checkpoints(io.StringIO(ndjson))
    await _tamper(sessionmaker, settings, "DELETE FROM audit_events WHERE seq > 9500")
    truncated = read_export(io.StringIO(await _export(sessionmaker, settings)))
    truncated.events = truncated.events[:]  # the fresh export signs its own, shorter, head
    report = verify_export(truncated, _public_key(settings), kept)
    assert not report.ok
    assert report.first_bad_seq == 5000  # the edit comes first


async def test_tail_truncation_is_caught_online_by_stored_checkpoints(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    settings = settings.model_copy(update={"audit_checkpoint_every": 10})
    audit.configure_sessionmaker(sessionmaker, settings)
    await add_events(sessionmaker, 30, per_transaction=5)
    await _tamper(sessionmaker, settings, "DELETE FROM audit_events WHERE seq > 25")
    async with sessionmaker() as session:
        report = await verify_database(session, settings)
    assert (report.first_bad_seq, report.reason, report.checkpoint_seq) == (26, "truncated", 30)


async def test_export_range_by_time_is_one_contiguous_segment(
    audited: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    await add_events(audited, 5, per_transaction=1)
    async with audited() as session:
        rows = (await session.execute(select(AuditEvent).order_by(AuditEvent.seq))).scalars()
        times = [r.occurred_at for r in rows]
        low, high = await seq_range(
            session, from_seq=None, to_seq=None, since=times[1], until=times[4]
        )
        assert (low, high) == (2, 4)
        plan = await plan_export(session, settings, from_seq=low, to_seq=high)
        body = b"".join([c async for c in chunks(session, plan, "ndjson")]).decode()
    export = read_export(io.StringIO(body))
    assert [e.seq for e in export.events] == [2, 3, 4]
    report = verify_export(export, _public_key(settings))
    assert report.ok, report
    async with audited() as session:
        plan = await plan_export(session, settings, from_seq=low, to_seq=high)
        csv_body = b"".join([c async for c in chunks(session, plan, "csv")]).decode()
    from_csv = read_export(io.StringIO(csv_body), "csv")
    assert [e.seq for e in from_csv.events] == [2, 3, 4]
    assert verify_export(from_csv, _public_key(settings)).ok
    # A partial export carries the tree before it, where its first link is proven.
    assert export.prefix is not None
    assert export.prefix.size == 1
    assert export.final is not None
    assert export.final.seq == 4
    forged_start = read_export(io.StringIO(body))
    forged_start.events[0].prev_hash = "f" * 64
    forged_start.events[0].hash = forged_start.events[0].compute_hash()
    anchored = verify_export(forged_start, _public_key(settings))
    assert (anchored.first_bad_seq, anchored.reason) == (2, "prev_hash_mismatch")
    # Dropping the first event of a ranged export is caught: the header's range is signed.
    export.events = export.events[1:]
    assert verify_export(export, _public_key(settings)).first_bad_seq == 2
    export.header["from_seq"] = 3
    assert verify_export(export, _public_key(settings)).reason == "bad_header_signature"


async def test_public_key_round_trip(settings: Settings) -> None:
    from app.audit.chain import public_key_b64, public_key_pem

    key = audit.AuditConfig.from_settings(settings).signer.public_key
    assert load_public_key(public_key_b64(key)) == key
    assert load_public_key(public_key_pem(key)) == key


CANARIES = ("CANARY-NAME-9931", "canary-9931@example.org", "+51 987 654 321", "CANARY NOTE")


async def test_no_canary_reaches_the_audit_table(
    audited: async_sessionmaker[AsyncSession],
) -> None:
    """Whatever a careless caller passes, personal values never reach the table."""
    async with audited() as session:
        for canary in CANARIES:
            for action, key in (
                (Action.screening_received, "personal_fields"),
                (Action.personal_data_read, "purpose"),
                (Action.referral_status_changed, "reason"),
                (Action.screening_received, "name"),
            ):
                value: object = [canary] if key == "personal_fields" else canary
                with pytest.raises(audit.AuditDataRejected):
                    await audit.record(session, action=action, actor=CLINIC, data={key: value})
            if canary != CANARIES[0]:  # an id-shaped name is an id as far as shape goes
                with pytest.raises(audit.AuditDataRejected):
                    await audit.record(
                        session, action=Action.screening_received, actor=CLINIC, request_id=canary
                    )
        await audit.record(
            session,
            action=Action.screening_received,
            actor=CLINIC,
            screening_id=uuid.uuid4(),
            data={"personal_fields": ["subject.name", "subject.contact", "notes"]},
        )
        await session.commit()
    async with audited() as session:
        dump = " ".join(
            str(tuple(row)) for row in (await session.execute(select(AuditEvent.__table__))).all()
        )
    assert "subject.name" in dump  # the names of fields held, not their values
    for canary in CANARIES:
        assert canary.lower() not in dump.lower()


# -- concurrency (PostgreSQL) ----------------------------------------------------------------


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh PostgreSQL database only: SQLite serialises writers by design."""
    admin_url, template_name = request.getfixturevalue("postgres_template")
    name = f"ruta_t_{uuid.uuid4().hex[:12]}"
    _admin_execute(admin_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"')
    try:
        yield _db_url(admin_url, name)
    finally:
        _admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def postgres_maker(
    postgres_url: str,
) -> AsyncIterator[tuple[async_sessionmaker[AsyncSession], Settings]]:
    settings = Settings(
        env=Environment.test,
        database_url=postgres_url,
        secret_key=TEST_SECRET,  # type: ignore[arg-type]
        audit_checkpoint_every=500,
    )
    engine = create_engine(postgres_url, pool_size=10, max_overflow=0)
    maker = create_sessionmaker(engine)
    audit.configure_sessionmaker(maker, settings)
    try:
        yield maker, settings
    finally:
        await engine.dispose()


async def _writer(maker: async_sessionmaker[AsyncSession], writer: int, appends: int) -> None:
    done = 0
    while done < appends:
        batch = min(1 + (done % 3), appends - done)  # 1, 2 or 3 events per transaction
        async with maker() as session:
            for _ in range(batch):
                done += 1
                await audit.record(
                    session,
                    action=Action.referral_attempted,
                    actor=audit.system(f"writer-{writer}"),
                    data={"attempt": done},
                )
            await session.commit()


async def test_eight_concurrent_writers_make_one_chain_on_postgres(
    postgres_maker: tuple[async_sessionmaker[AsyncSession], Settings],
) -> None:
    maker, settings = postgres_maker
    await asyncio.gather(*(_writer(maker, w, 1000) for w in range(8)))
    async with maker() as session:
        seqs = list((await session.execute(select(AuditEvent.seq).order_by("seq"))).scalars())
        per_writer = dict(
            (
                await session.execute(
                    select(AuditEvent.actor_id, func.count()).group_by(AuditEvent.actor_id)
                )
            ).all()
        )
        report = await verify_database(session, settings)
    assert seqs == list(range(1, 8001))
    assert per_writer == {f"writer-{w}": 1000 for w in range(8)}
    assert report.ok, report
    assert report.checkpoints_checked >= 15


async def test_concurrent_writers_on_sqlite_make_one_chain(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    """Smaller numbers; on PostgreSQL this is the test above at scale."""
    audit.configure_sessionmaker(sessionmaker, settings)
    await asyncio.gather(*(_writer(sessionmaker, w, 50) for w in range(4)))
    async with sessionmaker() as session:
        report = await verify_database(session, settings)
    assert report.ok, report
    assert report.last_seq == 200
