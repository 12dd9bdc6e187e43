from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, LargeBinary, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow


class Role(StrEnum):
    clinic = "clinic"
    partner = "partner"
    auditor = "auditor"
    admin = "admin"


class ApiClient(Base):
    """A caller of the API. The key is shown once; only its keyed hash is kept.

    Rotation replaces the key in place (same id, role and organisation); during an optional
    grace period the previous key's id and hash are kept beside it.
    """

    __tablename__ = "api_clients"
    __table_args__ = (
        CheckConstraint("role IN ('clinic', 'partner', 'auditor', 'admin')", name="role_known"),
        CheckConstraint(
            "role NOT IN ('clinic', 'partner') OR organisation IS NOT NULL",
            name="organisation_required",
        ),
        CheckConstraint(
            "(previous_key_id IS NULL) = (previous_key_hash IS NULL) "
            "AND (previous_key_id IS NULL) = (previous_key_expires_at IS NULL)",
            name="previous_key_complete",
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    organisation: Mapped[str | None] = mapped_column(String(200))
    key_id: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: After ``ruta clients rotate --grace …``: the replaced key, accepted until
    #: ``previous_key_expires_at`` (every use audited). All three are set, or none.
    previous_key_id: Mapped[str | None] = mapped_column(String(32), unique=True)
    previous_key_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    previous_key_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    key_rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
