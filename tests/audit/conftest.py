"""Audit fixtures: a sessionmaker whose sessions carry the audit configuration."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import audit
from app.audit import Action
from app.audit.writer import Actor
from app.settings import Settings


@pytest.fixture
def audited(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
) -> async_sessionmaker[AsyncSession]:
    audit.configure_sessionmaker(sessionmaker, settings)
    return sessionmaker


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
