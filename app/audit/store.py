"""Reading the audit tables: events as chain records, checkpoints, filters, online verify."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.chain import Checkpoint, EventRecord, format_time
from app.audit.verify import ChainVerifier, VerifyReport
from app.audit.writer import AuditConfig
from app.models.audit import AuditCheckpoint, AuditEvent
from app.settings import Settings

BATCH = 1000


def to_record(row: AuditEvent) -> EventRecord:
    return EventRecord(
        seq=row.seq,
        prev_hash=row.prev_hash,
        occurred_at=format_time(row.occurred_at),
        action=row.action,
        actor={"type": row.actor_type, "id": row.actor_id, "role": row.actor_role},
        refs={
            "screening_id": str(row.screening_id) if row.screening_id else None,
            "referral_id": str(row.referral_id) if row.referral_id else None,
            "partner_id": row.partner_id,
            "subject_id": str(row.subject_id) if row.subject_id else None,
            "request_id": row.request_id,
        },
        data=row.data,
        hash=row.hash,
    )


def to_checkpoint(row: AuditCheckpoint) -> Checkpoint:
    return Checkpoint(
        seq=row.seq,
        hash=row.hash,
        time=format_time(row.signed_at),
        key_id=row.key_id,
        signature=row.signature,
    )


@dataclass(frozen=True, slots=True)
class EventFilter:
    since: datetime | None = None
    until: datetime | None = None
    action: str | None = None
    actor_id: str | None = None
    referral_id: uuid.UUID | None = None
    partner_id: str | None = None
    screening_id: uuid.UUID | None = None
    subject_id: uuid.UUID | None = None

    def apply(self, query: Select[Any]) -> Select[Any]:
        if self.since is not None:
            query = query.where(AuditEvent.occurred_at >= self.since)
        if self.until is not None:
            query = query.where(AuditEvent.occurred_at < self.until)
        if self.action is not None:
            query = query.where(AuditEvent.action == self.action)
        if self.actor_id is not None:
            query = query.where(AuditEvent.actor_id == self.actor_id)
        if self.referral_id is not None:
            query = query.where(AuditEvent.referral_id == self.referral_id)
        if self.partner_id is not None:
            query = query.where(AuditEvent.partner_id == self.partner_id)
        if self.screening_id is not None:
            query = query.where(AuditEvent.screening_id == self.screening_id)
        if self.subject_id is not None:
            query = query.where(AuditEvent.subject_id == self.subject_id)
        return query


async def list_events(
    session: AsyncSession, filters: EventFilter, *, after_seq: int, limit: int
) -> list[EventRecord]:
    """One page in seq order, after ``after_seq`` (keyset pagination)."""
    query = filters.apply(select(AuditEvent)).where(AuditEvent.seq > after_seq)
    rows = (await session.execute(query.order_by(AuditEvent.seq).limit(limit))).scalars()
    return [to_record(row) for row in rows]


async def head(session: AsyncSession) -> tuple[int, str | None]:
    row = (
        await session.execute(
            select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)
        )
    ).first()
    return (0, None) if row is None else (int(row.seq), str(row.hash))


async def event_hash(session: AsyncSession, seq: int) -> str | None:
    return (
        await session.execute(select(AuditEvent.hash).where(AuditEvent.seq == seq))
    ).scalar_one_or_none()


async def checkpoints(
    session: AsyncSession, *, from_seq: int = 0, to_seq: int | None = None
) -> list[Checkpoint]:
    query = select(AuditCheckpoint).where(AuditCheckpoint.seq >= from_seq)
    if to_seq is not None:
        query = query.where(AuditCheckpoint.seq <= to_seq)
    rows = (await session.execute(query.order_by(AuditCheckpoint.seq))).scalars()
    return [to_checkpoint(row) for row in rows]


async def seq_range(
    session: AsyncSession,
    *,
    from_seq: int | None,
    to_seq: int | None,
    since: datetime | None,
    until: datetime | None,
) -> tuple[int, int]:
    """The contiguous seq range an export covers. Times never decrease along the chain
    (the writer guarantees it), so a time window is exactly one seq range."""
    head_seq, _ = await head(session)
    low, high = max(from_seq or 1, 1), min(to_seq or head_seq, head_seq)
    if since is not None:
        first = (
            await session.execute(
                select(func.min(AuditEvent.seq)).where(AuditEvent.occurred_at >= since)
            )
        ).scalar_one_or_none()
        low = max(low, first if first is not None else head_seq + 1)
    if until is not None:
        last = (
            await session.execute(
                select(func.max(AuditEvent.seq)).where(AuditEvent.occurred_at < until)
            )
        ).scalar_one_or_none()
        high = min(high, last if last is not None else 0)
    return low, high


async def stream_records(
    session: AsyncSession,
    from_seq: int,
    to_seq: int,
    *,
    batch: int = BATCH,
    release_between_batches: bool = False,
) -> AsyncIterator[EventRecord]:
    """Events ``from_seq..to_seq`` in order, a batch at a time (keyset, bounded memory).

    ``release_between_batches`` ends the read transaction after each batch, for sessions
    of their own: on SQLite every transaction holds the write lock (``BEGIN IMMEDIATE``),
    and a long export must not block writers. Rows never change, so nothing is lost.
    """
    cursor = from_seq - 1
    while cursor < to_seq:
        rows = (
            (
                await session.execute(
                    select(AuditEvent)
                    .where(AuditEvent.seq > cursor, AuditEvent.seq <= to_seq)
                    .order_by(AuditEvent.seq)
                    .limit(batch)
                    .execution_options(populate_existing=True)
                )
            )
            .scalars()
            .all()
        )
        if not rows:
            return
        for row in rows:
            yield to_record(row)
        cursor = rows[-1].seq
        session.expunge_all()
        if release_between_batches:
            await session.rollback()


async def verify_database(
    session: AsyncSession,
    settings: Settings,
    *,
    held: Iterable[Checkpoint] = (),
    release_between_batches: bool = False,
) -> VerifyReport:
    """Walk the whole chain in the database against every stored checkpoint, and any
    ``held`` ones an auditor kept."""
    public_key = AuditConfig.from_settings(settings).signer.public_key
    verifier = ChainVerifier(public_key, [*await checkpoints(session), *held])
    head_seq, _ = await head(session)
    # Keyset on the seq column; a gap or a tampered seq shows as a mismatch in the walk.
    records = stream_records(session, 1, head_seq, release_between_batches=release_between_batches)
    async for record in records:
        if not verifier.feed(record):
            break
    return verifier.finish()
