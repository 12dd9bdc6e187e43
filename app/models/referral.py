from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from app.compact import CompactJSON
from app.models.base import Base, UTCDateTime, filter_key, not_null, utcnow


class Decision(Base):
    """The rules engine's decision on one screening, with its trace."""

    __tablename__ = "decisions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    screening_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("screenings.id"), unique=True)
    rule_set_version: Mapped[str] = mapped_column(String(64))
    rule_set_hash: Mapped[str] = mapped_column(String(64))
    non_identifying_notification: Mapped[bool] = mapped_column(Boolean, default=False)
    #: The directory's notification recipient the non-identifying notification went to
    #: (None when none was due, or none is in the directory).
    notification_partner_id: Mapped[str | None] = mapped_column(String(64))
    #: Stored compressed (app.compact): read back, it is the very document written.
    trace: Mapped[dict[str, Any]] = mapped_column(CompactJSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


#: The statuses a partner still works on (app.referrals.state.PARTNER_TRANSITIONS), as the
#: predicate of the inbox's partial indexes; tests/referrals/test_list_plans.py checks that
#: it is that list.
OPEN_STATUSES_SQL = "('queued', 'delivered', 'received', 'accepted', 'in-progress', 'on-hold')"


class Referral(Base):
    """One service a decision asks for, and the partner it is with now.

    Holds no personal data: the outbound body lives encrypted in the delivery outbox.
    """

    __tablename__ = "referrals"
    __table_args__ = (Index("ix_referrals_status_deadline", "status", "deadline_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    screening_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("screenings.id"), index=True)
    decision_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("decisions.id"))
    subject_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("subjects.id"), index=True)
    organisation: Mapped[str] = mapped_column(String(200))
    region: Mapped[str] = mapped_column(String(32))
    service: Mapped[str] = mapped_column(String(16))
    #: Which kind of partner may take it (app.schemas.decision.Recipient).
    recipient: Mapped[str] = mapped_column(String(32), default="provider")
    urgency: Mapped[str] = mapped_column(String(16))
    legal_basis: Mapped[str] = mapped_column(String(32))
    identifying: Mapped[bool] = mapped_column(Boolean)
    #: Flags, partners tried and data categories are short lists of codes, read and written
    #: whole (no query looks inside them): stored as app.compact stores JSON (0016).
    flags: Mapped[list[str]] = mapped_column(CompactJSON, default=list)
    #: The decision's reasons, texts included (compressed, app.compact).
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(CompactJSON, default=list)
    status: Mapped[str] = mapped_column(String(16))
    partner_id: Mapped[str | None] = mapped_column(ForeignKey("partners.id"))
    #: Why this partner was chosen and why others were passed over (ids and codes only).
    match: Mapped[dict[str, Any]] = mapped_column(CompactJSON, default=dict)
    #: Partners already tried (rejected, timed out or undeliverable), in order.
    tried_partner_ids: Mapped[list[str]] = mapped_column(CompactJSON, default=list)
    deadline_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Data categories the current partner received (e.g. "demographics", "clinical").
    data_categories: Mapped[list[str]] = mapped_column(CompactJSON, default=list)
    needs_human: Mapped[bool] = mapped_column(Boolean, default=False)
    human_reason: Mapped[str | None] = mapped_column(String(64))
    assignment: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


# The referral log's filters, each followed by the page order (newest first): migration
# 0011, keyed by filter_key since 0017 (docs/performance.md, "Referral list indexes"). The
# page order's tie-break, id, is not in them: rows that share a created_at (rare) are
# ordered by id as they are read, a few at a time (an incremental sort).
Index("ix_referrals_created", Referral.created_at)
Index("ix_referrals_status_created", filter_key(Referral.status), Referral.created_at)
Index("ix_referrals_service_created", filter_key(Referral.service), Referral.created_at)
Index("ix_referrals_urgency_created", filter_key(Referral.urgency), Referral.created_at)
Index(
    "ix_referrals_partner_created",
    filter_key(Referral.partner_id),
    Referral.created_at,
    **not_null("partner_id"),
)
Index("ix_referrals_region_created", filter_key(Referral.region), Referral.created_at)
Index(
    "ix_referrals_region_urgency_created",
    filter_key(Referral.region),
    filter_key(Referral.urgency),
    Referral.created_at,
)
# A partner's inbox (app.referrals.inbox): its open referrals by urgency, newest first; its
# closed ones by last change.
_OPEN = text(f"status IN {OPEN_STATUSES_SQL}")
_CLOSED = text(f"status NOT IN {OPEN_STATUSES_SQL}")
Index(
    "ix_referrals_inbox_open",
    filter_key(Referral.partner_id),
    filter_key(Referral.urgency),
    Referral.created_at,
    postgresql_where=_OPEN,
    sqlite_where=_OPEN,
)
Index(
    "ix_referrals_inbox_closed",
    filter_key(Referral.partner_id),
    Referral.updated_at,
    postgresql_where=_CLOSED,
    sqlite_where=_CLOSED,
)


class ReferralEvent(Base):
    """Every status a referral has had, who set it, and why (codes only)."""

    __tablename__ = "referral_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    referral_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("referrals.id"), index=True)
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(64))
    partner_id: Mapped[str | None] = mapped_column(String(64))
    actor_role: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
