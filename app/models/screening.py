from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, LargeBinary, String, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.compact import CompactJSON
from app.models.base import Base, JSONType, UTCDateTime, utcnow


class Subject(Base):
    """A person, known to Ruta only by the clinic's pseudonymous case code.

    ``wrapped_dek`` is the subject's data key, wrapped by the key-encryption key. Erasure
    deletes it, and with it every personal field of every screening of this subject.
    """

    __tablename__ = "subjects"
    __table_args__ = (UniqueConstraint("organisation", "case_code"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    organisation: Mapped[str] = mapped_column(String(200))
    case_code: Mapped[str] = mapped_column(String(64))
    wrapped_dek: Mapped[bytes | None] = mapped_column(LargeBinary)
    kek_id: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Screening(Base):
    """A screening as received. ``data`` holds the non-personal fields; the personal ones
    are in ``personal_ct``, encrypted under the subject's data key."""

    __tablename__ = "screenings"
    # No index on (organisation, received_at): no query filters on them (dropped in 0010).

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    organisation: Mapped[str] = mapped_column(String(200))
    #: The API client, or for a JWT the UUIDv5 of issuer and subject (hence no foreign key).
    client_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    subject_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("subjects.id"), index=True)
    schema_version: Mapped[str] = mapped_column(String(8))
    screened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: HMAC of the canonical body: same id + same fingerprint is a replay, else a conflict.
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary(32))
    #: Compressed (app.compact); no query looks inside it.
    data: Mapped[dict[str, Any]] = mapped_column(CompactJSON)
    personal_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    #: Dotted paths of the personal fields present (no values), e.g. ["subject.name"].
    personal_fields: Mapped[list[str]] = mapped_column(JSONType, default=list)
    #: When the person withdrew consent (None: not withdrawn). Referrals on consent are
    #: revoked then; those on child-protection duty or vital interest stand.
    consent_withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
