"""Witnesses outside the database: a real loopback witness receives every checkpoint,
signed, with a consistency proof from the last one it got; a file gets them appended; and a
truncation after the last checkpoint the database keeps is caught with the witnessed one."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from typer.testing import CliRunner

from app import audit
from app.audit import merkle, store, witness
from app.audit.chain import Checkpoint, signature_valid
from app.audit.cli import audit_cli
from app.audit.export import chunks, prepare_export
from app.audit.reader import read_checkpoints, read_export, verify_export
from app.main import create_app
from app.models import AuditWitnessCursor
from app.models.base import utcnow
from app.settings import Settings, get_settings
from tests.audit.conftest import CLINIC, add_events, tamper
from tests.conftest import TEST_SECRET
from tests.delivery.partner_server import PartnerServer


@pytest.fixture
def witness_server(settings: Settings) -> Iterator[PartnerServer]:
    server = PartnerServer(secret=settings.witness_secret()).start()
    try:
        yield server
    finally:
        server.stop()


def _configure(
    maker: async_sessionmaker[AsyncSession], settings: Settings, **update: object
) -> Settings:
    settings = settings.model_copy(update={"audit_checkpoint_every": 10, **update})
    audit.configure_sessionmaker(maker, settings)
    return settings


async def test_a_loopback_witness_receives_every_checkpoint_signed(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    witness_server: PartnerServer,
) -> None:
    settings = _configure(sessionmaker, settings, audit_witness_urls=witness_server.url)
    key = audit.AuditConfig.from_settings(settings).signer.public_key
    await add_events(sessionmaker, 25, per_transaction=5)
    assert await witness.deliver_due(sessionmaker, settings, "test") == 2
    await add_events(sessionmaker, 10, per_transaction=5)
    assert await witness.deliver_due(sessionmaker, settings, "test") == 1
    received = witness_server.received
    assert all(r.verified for r in received)  # Standard Webhooks, the witness's secret
    assert len({r.webhook_id for r in received}) == 3
    messages = [json.loads(r.body) for r in received]
    checkpoints = [Checkpoint.from_json(m["checkpoint"]) for m in messages]
    assert [c.seq for c in checkpoints] == [10, 20, 30]
    assert all(signature_valid(c, key) for c in checkpoints)
    # Each extends the one before it, which the witness can check by itself.
    for before, message, after in zip(checkpoints, messages[1:], checkpoints[1:], strict=False):
        assert message["previous_size"] == before.seq
        proof = [base64.b64decode(h) for h in message["consistency"]]
        assert before.root_bytes is not None
        assert after.root_bytes is not None
        assert merkle.verify_consistency(
            before.seq, after.seq, before.root_bytes, after.root_bytes, proof
        )


async def test_a_witness_that_fails_is_retried_later_from_where_it_stopped(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    witness_server: PartnerServer,
) -> None:
    settings = _configure(sessionmaker, settings, audit_witness_urls=witness_server.url)
    await add_events(sessionmaker, 20, per_transaction=5)
    witness_server.script = [200, 503]
    now = utcnow()
    assert await witness.deliver_due(sessionmaker, settings, "test", now=now) == 1
    async with sessionmaker() as session:
        (cursor,) = (await session.execute(text("SELECT witness FROM audit_witness_cursors"))).all()
        row = await session.get(AuditWitnessCursor, cursor.witness)
        assert row is not None
        assert (row.delivered_seq, row.attempts, row.last_error) == (10, 1, "http_503")
        assert row.next_attempt_at is not None
        assert row.next_attempt_at > now
    assert await witness.deliver_due(sessionmaker, settings, "test", now=now) == 0  # not due
    later = now + timedelta(hours=2)
    assert await witness.deliver_due(sessionmaker, settings, "test", now=later) == 1
    assert [json.loads(r.body)["checkpoint"]["seq"] for r in witness_server.received] == [
        10,
        20,
        20,
    ]


async def _cut_tail(maker: async_sessionmaker[AsyncSession], settings: Settings, keep: int) -> None:
    """The database's owner removes the tail and the checkpoints it keeps above it."""
    await tamper(
        maker,
        settings,
        "DELETE FROM audit_events WHERE seq > :k",
        "DELETE FROM audit_checkpoints WHERE seq > :k",
        params={"k": keep},
        tables=("audit_events", "audit_checkpoints"),
    )


async def test_a_cut_tail_is_caught_with_the_witnessed_checkpoint(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    witness_server: PartnerServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    file = tmp_path / "witness.ndjson"
    settings = _configure(
        sessionmaker, settings, audit_witness_urls=witness_server.url, audit_witness_file=file
    )
    await add_events(sessionmaker, 47, per_transaction=1)
    async with sessionmaker() as session:  # the time-based checkpoint of the head
        await audit.checkpoint_if_due(session, settings, force=True)
        await session.commit()
    assert await witness.deliver_due(sessionmaker, settings, "test") == 10  # 5 each
    witnessed = read_checkpoints(file.read_bytes().splitlines())
    assert [c.seq for c in witnessed] == [10, 20, 30, 40, 47]
    from_server = [
        Checkpoint.from_json(json.loads(r.body)["checkpoint"]) for r in witness_server.received
    ]
    assert from_server == witnessed

    await _cut_tail(sessionmaker, settings, 43)
    async with sessionmaker() as session:
        assert await store.check_against_checkpoints(session) is None  # the database agrees
        plan = await prepare_export(session, settings, actor=CLINIC, fmt="ndjson")
        await session.commit()
        body = b"".join([c async for c in chunks(session, plan, "ndjson")])
    export = read_export(body.splitlines())
    key = audit.AuditConfig.from_settings(settings).signer.public_key
    assert verify_export(export, key).ok  # signed, and consistent with itself
    report = verify_export(export, key, witnessed)
    assert (report.ok, report.reason, report.checkpoint_seq, report.checkpoint_source) == (
        False,
        "truncated",
        47,
        "held",
    )
    # The same from the command line, against the database, with the witness's file.
    monkeypatch.setenv("RUTA_ENV", "test")
    monkeypatch.setenv("RUTA_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("RUTA_SECRET_KEY", TEST_SECRET)
    get_settings.cache_clear()
    try:
        result = await asyncio.to_thread(
            CliRunner().invoke, audit_cli, ["verify", "--checkpoints", str(file)]
        )
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout)["checkpoint_seq"] == 47
    assert "the held checkpoint at seq 47" in result.stderr


async def test_the_service_signs_and_witnesses_new_events_within_its_interval(
    settings: Settings, tmp_path: Path
) -> None:
    """The background task of a running app: with RUTA_AUDIT_CHECKPOINT_SECONDS=2 a new
    event is in a signed checkpoint, in the witness file, within about 2 seconds."""
    file = tmp_path / "witness.ndjson"
    settings = settings.model_copy(
        update={"audit_checkpoint_seconds": 2, "audit_witness_file": file}
    )
    app: FastAPI = create_app(settings)
    async with app.router.lifespan_context(app):
        await add_events(app.state.sessionmaker, 3)
        async with app.state.sessionmaker() as session:
            head, _ = await store.head(session)
        for _ in range(60):  # bounded: 6 s at most
            if file.exists() and any(
                c.seq >= head for c in read_checkpoints(file.read_bytes().splitlines())
            ):
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("no witnessed checkpoint covered the new events within 6 s")
