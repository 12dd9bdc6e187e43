"""Erasure by crypto-shredding, and purpose-bound reads of personal fields.

Erasing a subject deletes its wrapped data key. Every personal field of every screening of
that subject, and every queued outbound body, was encrypted under that key, so all of them
become unreadable at once, in the database and in any copy of it taken afterwards. The
non-personal screening, decision and referral records stay for statistics, and the audit
chain is untouched (it never held personal data), so it still verifies.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app import audit
from app.audit import Action
from app.audit.writer import Actor
from app.auth import Principal
from app.errors import NotFound
from app.models import Role, Screening, Subject
from app.services.intake import get_screening_for
from app.services.personal import decrypt_personal
from app.settings import Settings


class ErasureReason(StrEnum):
    data_subject_request = "data_subject_request"
    consent_withdrawn = "consent_withdrawn"
    retention_expired = "retention_expired"
    entered_in_error = "entered_in_error"


class ReadPurpose(StrEnum):
    """Why someone reads a person's personal fields; recorded with every read."""

    care_coordination = "care_coordination"
    safeguarding = "safeguarding"
    data_subject_request = "data_subject_request"
    legal_obligation = "legal_obligation"
    audit_investigation = "audit_investigation"


async def find_subject(session: AsyncSession, organisation: str, case_code: str) -> Subject:
    subject = (
        await session.execute(
            select(Subject).where(
                Subject.organisation == organisation, Subject.case_code == case_code
            )
        )
    ).scalar_one_or_none()
    if subject is None:
        raise NotFound("No subject with this case code in this organisation.")
    return subject


async def erase_subject(
    session: AsyncSession,
    *,
    subject: Subject,
    reason: ErasureReason,
    actor: Principal | Actor,
    now: datetime,
) -> int:
    """Delete the subject's data key; return how many screenings it made unreadable."""
    screenings = int(
        (
            await session.execute(
                select(func.count(Screening.id)).where(Screening.subject_id == subject.id)
            )
        ).scalar_one()
    )
    subject.wrapped_dek = None
    subject.kek_id = None
    subject.erased_at = now
    await session.flush()
    await audit.record(
        session,
        action=Action.subject_erased,
        actor=actor,
        subject_id=subject.id,
        data={"reason": reason.value, "count": screenings},
    )
    return screenings


async def read_personal(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    screening_id: uuid.UUID,
    purpose: ReadPurpose,
    *,
    request_id: str | None,
) -> tuple[Screening, Subject, dict[str, Any]]:
    """Decrypt a screening's personal fields for a stated purpose, and record the read.

    Clinics read their own organisation's screenings; admins read any, always with a
    purpose on record. Every read is an audit event naming who, what fields, and why.
    """
    if principal.role is Role.admin:
        screening = await session.get(Screening, screening_id)
        if screening is None:
            raise NotFound("No screening with this id.")
    else:
        screening = await get_screening_for(session, principal, screening_id)
    subject = await session.get(Subject, screening.subject_id)
    assert subject is not None
    personal = decrypt_personal(settings, subject, screening)
    await audit.record(
        session,
        action=Action.personal_data_read,
        actor=principal,
        screening_id=screening.id,
        subject_id=subject.id,
        request_id=request_id,
        data={"fields": sorted(personal), "purpose": purpose.value},
    )
    return screening, subject, personal
