"""Key-encryption-key rotation: re-wrap every subject's data key under the current KEK.

Only the small wrapped keys change; the encrypted personal fields and queued bodies are not
touched, so rotation is fast and cannot corrupt data. Run it after setting the new
``RUTA_ENCRYPTION_KEK`` with the old one in ``RUTA_ENCRYPTION_KEK_PREVIOUS``; once it
reports nothing left, remove the old KEK.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app import crypto
from app.models import Subject
from app.settings import Settings


async def rewrap_data_keys(session: AsyncSession, settings: Settings, *, batch: int = 500) -> int:
    """Re-wrap data keys not yet under the current KEK; return how many were re-wrapped."""
    current = settings.kek_bytes()
    current_id = crypto.kek_id(current)
    keks = settings.keks_by_id()
    rewrapped = 0
    while True:
        subjects = (
            (
                await session.execute(
                    select(Subject)
                    .where(Subject.wrapped_dek.is_not(None), Subject.kek_id != current_id)
                    .limit(batch)
                )
            )
            .scalars()
            .all()
        )
        if not subjects:
            return rewrapped
        for subject in subjects:
            assert subject.wrapped_dek is not None
            dek = crypto.unwrap_with_any(keks, subject.wrapped_dek, subject.id, subject.kek_id)
            subject.wrapped_dek = crypto.wrap_dek(current, dek, subject.id)
            subject.kek_id = current_id
            rewrapped += 1
        await session.flush()
