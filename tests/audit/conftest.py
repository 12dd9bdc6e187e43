"""Audit fixtures: a sessionmaker whose sessions carry the audit configuration."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import audit
from app.audit import Action
from app.audit.writer import Actor
from app.compact import AUDIT, pack_json
from app.db import create_engine, create_sessionmaker
from app.settings import Settings, get_settings
from tests.conftest import TEST_SECRET


@pytest.fixture
def audited(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
) -> async_sessionmaker[AsyncSession]:
    audit.configure_sessionmaker(sessionmaker, settings)
    return sessionmaker


#: An event's data as the writer stores ``{}`` (migration 0014): what an attacker who edits
#: the document, rather than the bytes, writes.
STORED_EMPTY = pack_json({}, AUDIT)

CLINIC = Actor(type="client", id=str(uuid.UUID(int=1)), role="clinic")


async def add_events(
    maker: async_sessionmaker[AsyncSession], count: int, *, per_transaction: int = 500
) -> None:
    """Append ``count`` varied events through the writer, ``per_transaction`` per commit."""
    done = 0
    while done < count:
        async with maker() as session:
            for _ in range(min(per_transaction, count - done)):
                done += 1
                await audit.record(session, **sample_event(done))
            await session.commit()


def sample_event(n: int) -> dict[str, Any]:
    """A deterministic mix of actions and refs, so mutations hit every field shape."""
    kind = n % 4
    screening = uuid.UUID(int=n // 3 + 10)
    if kind == 0:
        return {
            "action": Action.screening_received,
            "actor": CLINIC,
            "screening_id": screening,
            "subject_id": uuid.UUID(int=n // 5 + 99),
            "request_id": f"req-{n}",
            "data": {"schema_version": "1", "personal_fields": ["subject.name"]},
        }
    if kind == 1:
        return {
            "action": Action.decision_made,
            "actor": audit.system("rules"),
            "screening_id": screening,
            "data": {"rule_set_hash": "ab" * 32, "rules_fired": ["minor", "danger"]},
        }
    if kind == 2:
        return {
            "action": Action.referral_attempted,
            "actor": audit.system("delivery-worker"),
            "referral_id": uuid.UUID(int=n + 7),
            "partner_id": "hospital-santa-rosa",
            "data": {"attempt": n % 5, "http_status": 503, "outcome": "retry"},
        }
    return {
        "action": Action.personal_data_read,
        "actor": Actor(type="client", id=str(uuid.UUID(int=2)), role="partner"),
        "referral_id": uuid.UUID(int=n + 7),
        "data": {"fields": ["subject.contact"], "purpose": "referral_contact"},
    }


async def tamper(
    maker: async_sessionmaker[AsyncSession],
    settings: Settings,
    *statements: str,
    params: dict[str, Any] | None = None,
    tables: tuple[str, ...] = ("audit_events",),
) -> None:
    """What the database's owner can do: switch off the append-only triggers of
    ``tables``, then run ``statements``."""
    async with maker() as session:
        for table in tables:
            if settings.is_sqlite:
                for verb in ("update", "delete"):
                    await session.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_{verb}"))
            else:
                await session.execute(
                    text(f"ALTER TABLE {table} DISABLE TRIGGER {table}_append_only")
                )
        for statement in statements:
            await session.execute(text(statement), params or {})
        await session.commit()


async def record_disclosures(
    maker: async_sessionmaker[AsyncSession], screening: uuid.UUID, count: int
) -> None:
    """``count`` reads of a screening's personal data, in one transaction."""
    async with maker() as session:
        for _ in range(count):
            await audit.record(
                session,
                action=Action.personal_data_read,
                actor=CLINIC,
                screening_id=screening,
                data={"fields": ["subject.name"], "purpose": "care_coordination"},
            )
        await session.commit()


def use_cli(settings: Settings, monkeypatch: pytest.MonkeyPatch, checkpoint_every: int) -> Settings:
    """Settings from the environment, as ``ruta`` reads them, for this test's database."""
    monkeypatch.setenv("RUTA_ENV", "test")
    monkeypatch.setenv("RUTA_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("RUTA_SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("RUTA_AUDIT_CHECKPOINT_EVERY", str(checkpoint_every))
    get_settings.cache_clear()
    return get_settings()


def seed(
    settings: Settings,
    count: int,
    *,
    per_transaction: int = 50,
    disclosures: int = 0,
    screening: uuid.UUID | None = None,
) -> None:
    """From a test that runs ``ruta`` (no event loop of its own): ``count`` events, then
    ``disclosures`` reads of ``screening``'s personal data."""

    async def run() -> None:
        engine = create_engine(settings.database_url)
        try:
            maker = create_sessionmaker(engine)
            audit.configure_sessionmaker(maker, settings)
            await add_events(maker, count, per_transaction=per_transaction)
            if disclosures:
                assert screening is not None
                await record_disclosures(maker, screening, disclosures)
        finally:
            await engine.dispose()

    asyncio.run(run())
