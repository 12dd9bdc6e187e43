"""The audit filters' indexes key text by a four-byte hash on PostgreSQL (migration 0015):
values whose hashes collide must still be told apart, on both engines."""

from __future__ import annotations

import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import audit
from app.audit import Action
from app.audit.store import EventFilter, events_query, record_of
from app.audit.writer import Actor

#: Pairs with one hashtext() on PostgreSQL (found by enumeration; checked below).
PARTNERS = ("partner-19", "partner-54704")
ACTORS = ("partner-14924", "partner-196262")


async def _write(maker: async_sessionmaker[AsyncSession]) -> None:
    async with maker() as session:
        for n in range(12):
            await audit.record(
                session,
                action=Action.referral_forwarded,
                actor=Actor(type="client", id=ACTORS[n % 2], role="partner"),
                referral_id=uuid.UUID(int=n + 1),
                partner_id=PARTNERS[n % 2] if n % 3 else None,
                data={"attempt": n},
            )
        await session.commit()


async def test_colliding_partners_and_actors_are_told_apart(
    audited: async_sessionmaker[AsyncSession],
) -> None:
    await _write(audited)
    async with audited() as session:
        if session.get_bind().dialect.name == "postgresql":
            for pair in (PARTNERS, ACTORS):
                hashes = await session.execute(
                    text("SELECT hashtext(:a) = hashtext(:b)"), {"a": pair[0], "b": pair[1]}
                )
                assert hashes.scalar_one(), f"{pair} should collide for this test to mean much"
        for n, partner in enumerate(PARTNERS):
            rows = await session.execute(
                events_query(
                    EventFilter(partner_id=partner), after_seq=0, limit=50, seq_window=None
                )
            )
            got = [record_of(row).data["attempt"] for row in rows]
            assert got == [i for i in range(12) if i % 2 == n and i % 3], partner
        for n, actor in enumerate(ACTORS):
            rows = await session.execute(
                events_query(EventFilter(actor_id=actor), after_seq=0, limit=50, seq_window=None)
            )
            got = [record_of(row).data["attempt"] for row in rows]
            assert got == [i for i in range(12) if i % 2 == n], actor
