"""The audit trail's state as the auditor's console shows it, and a verification run from
it: the same service as ``GET /v1/audit/verify``, recorded the same way."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import Action, store, verification
from app.audit.chain import Checkpoint
from app.auth import Principal
from app.models.audit import AuditEvent
from app.models.base import matches
from app.settings import Settings


@dataclass(frozen=True, slots=True)
class TrailState:
    head_seq: int
    head_hash: str | None
    #: The last signed checkpoint, if any.
    checkpoint: Checkpoint | None
    #: The last recorded verification (``audit.verified``), if any.
    last_verification: AuditEvent | None


async def trail_state(session: AsyncSession) -> TrailState:
    head_seq, head_hash = await store.head(session)
    last = (
        await session.execute(
            select(AuditEvent)
            .where(matches(AuditEvent.action, Action.audit_verified.value))
            .order_by(AuditEvent.seq.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    return TrailState(head_seq, head_hash, await store.latest_checkpoint(session), last)


async def verify_now(
    session: AsyncSession, settings: Settings, principal: Principal
) -> dict[str, Any]:
    """Verify what was appended since the last verification (and that the log still holds
    what was verified before), as ``GET /v1/audit/verify``; recorded as ``audit.verified``."""
    return await verification.verify_online(session, settings, principal)
