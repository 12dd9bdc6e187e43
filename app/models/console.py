"""Console sessions: a person signed in to the browser console (app/console/).

The cookie holds a random token; the table holds only its keyed hash, so a database leak
yields no usable session. Nothing here is personal data: the client's id, role and
organisation id, as for an API call.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, Index, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow


class ConsoleSession(Base):
    __tablename__ = "console_sessions"
    __table_args__ = (
        CheckConstraint("via IN ('key', 'jwt')", name="via_known"),
        Index("ix_console_sessions_expires_at", "expires_at"),
    )

    #: HMAC-SHA256 (hex) of the cookie's token under RUTA_SECRET_KEY.
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: The API client (a key sign-in) or the UUIDv5 of a JWT's issuer and subject.
    client_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    #: How the person signed in: an API key (its client is read again on every request, so
    #: revoking the key ends the session) or a JWT (the token's claims, kept until expiry).
    via: Mapped[str] = mapped_column(String(8))
    #: The key a key sign-in used: the session ends when that key stops authenticating.
    key_id: Mapped[str | None] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    organisation: Mapped[str | None] = mapped_column(String(200))
    #: The token every form of this session carries (synchroniser-token CSRF defence).
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: The absolute end, however active the session is.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
