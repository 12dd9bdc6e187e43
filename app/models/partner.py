"""The partner directory as stored. See app/partners/directory.py for the fields' meaning.

Signing secrets are stored only encrypted (AES-GCM under the KEK, the associated data
binding the ciphertext to this table, column and partner id) and no API response carries
them, except the one rotation response that issues a new secret.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, CheckConstraint, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, JSONType, UTCDateTime, utcnow


class PartnerRow(Base):
    __tablename__ = "partners"
    __table_args__ = (
        CheckConstraint("status IN ('active', 'paused')", name="status_known"),
        CheckConstraint("payload_format IN ('ruta-json', 'fhir-r4')", name="format_known"),
        CheckConstraint("source IN ('file', 'api')", name="source_known"),
        CheckConstraint(
            "role IS NULL OR role IN ('child_protection_authority', 'law_enforcement', "
            "'shelter', 'health_facility', 'legal_aid', 'psychosocial', "
            "'notification_recipient')",
            name="role_known",
        ),
        CheckConstraint(
            "capacity_available >= 0 AND capacity_available <= capacity_maximum",
            name="capacity_range",
        ),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organisation_id: Mapped[str] = mapped_column(String(64), index=True)
    organisation_name: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200))
    #: The partner's role (app.schemas.decision.PartnerRole). NULL only for rows created
    #: before roles existed: such a partner receives nothing until its role is set.
    role: Mapped[str | None] = mapped_column(String(32))
    description: Mapped[str | None] = mapped_column(String(1000))
    services: Mapped[list[str]] = mapped_column(JSONType)
    #: {"national": bool, "regions": [...], "ubigeo_prefixes": [...]}
    service_area: Mapped[dict[str, Any]] = mapped_column(JSONType)
    #: {"min_age": int|null, "max_age": int|null, "sexes": [...]}
    eligibility: Mapped[dict[str, Any]] = mapped_column(JSONType)
    languages: Mapped[list[str]] = mapped_column(JSONType)
    capacity_available: Mapped[int] = mapped_column(Integer)
    capacity_maximum: Mapped[int] = mapped_column(Integer)
    capacity_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    hours: Mapped[dict[str, Any]] = mapped_column(JSONType)
    #: None for a console-only partner: its referrals wait in its console inbox.
    endpoint_url: Mapped[str | None] = mapped_column(String(2000))
    payload_format: Mapped[str] = mapped_column(String(16))
    thin: Mapped[bool] = mapped_column(Boolean)
    #: Encrypted JSON list of {"secret", "created_at", "expires_at"}; never returned.
    secrets_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    secret_rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(Integer)
    #: Where the partner came from: the directory file or the admin API.
    source: Mapped[str] = mapped_column(String(8))
    #: Fields an admin changed at runtime; a later file sync leaves them alone.
    overridden: Mapped[list[str]] = mapped_column(JSONType, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
