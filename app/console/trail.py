"""The audit trail's state as the auditor's console shows it, and a verification run from
it: the same walk as ``GET /v1/audit/verify``, recorded the same way."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app import audit
from app.audit import Action, store
from app.audit.chain import Checkpoint, EventRecord
from app.audit.verify import VerifyReport
from app.auth import Principal
from app.models.audit import AuditEvent
from app.settings import Settings


@dataclass(frozen=True, slots=True)
class TrailState:
    head_seq: int
    head_hash: str | None
    #: The last signed checkpoint, if any.
    checkpoint: Checkpoint | None
    #: The last recorded verification (``audit.verified``), if any.
    last_verification: EventRecord | None


async def trail_state(session: AsyncSession) -> TrailState:
    head_seq, head_hash = await store.head(session)
    checkpoints = await store.checkpoints(session)
    last = (
        await session.execute(
            select(AuditEvent)
            .where(AuditEvent.action == Action.audit_verified.value)
            .order_by(AuditEvent.seq.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    return TrailState(
        head_seq,
        head_hash,
        checkpoints[-1] if checkpoints else None,
        store.to_record(last) if last is not None else None,
    )


async def verify_now(
    session: AsyncSession, settings: Settings, principal: Principal
) -> VerifyReport:
    """Walk the whole chain against every stored checkpoint, and record that it was done."""
    report = await store.verify_database(session, settings)
    audit.attach(session, settings)
    await audit.record(
        session,
        action=Action.audit_verified,
        actor=principal,
        data={"ok": report.ok, "first_bad_seq": report.first_bad_seq, "to_seq": report.last_seq},
    )
    return report
