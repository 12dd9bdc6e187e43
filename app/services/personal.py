"""Decrypting a screening's personal fields (callers record the read in the audit trail)."""

from __future__ import annotations

import json
from typing import Any

from app import crypto
from app.models import Screening, Subject
from app.settings import Settings


def decrypt_personal(settings: Settings, subject: Subject, screening: Screening) -> dict[str, Any]:
    if screening.personal_ct is None:
        return {}
    if subject.wrapped_dek is None:
        return {}
    dek = crypto.unwrap_with_any(
        settings.keks_by_id(), subject.wrapped_dek, subject.id, subject.kek_id
    )
    plaintext = crypto.decrypt_field(
        dek, screening.personal_ct, table="screenings", column="personal_ct", row_id=screening.id
    )
    loaded: dict[str, Any] = json.loads(plaintext)
    return loaded
