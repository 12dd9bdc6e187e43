"""The transactional outbox: one row per message to a partner, one row per attempt."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Uuid,
    column,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.compact import Digest
from app.models.base import Base, UTCDateTime, utcnow

#: The status of a message not yet delivered, and the event types of a partner's notices,
#: as written in the partial indexes' predicates (migration 0012).
PENDING_SQL = "pending"
NOTICE_EVENT_TYPES = ("referral.revoked", "referral.consent_withdrawn")
NOTICES_SQL = "(" + ", ".join(f"'{t}'" for t in NOTICE_EVENT_TYPES) + ")"


class Delivery(Base):
    """A message for a partner, written in the same transaction as what caused it.

    The body is stored once, encrypted under the subject's data key, and every attempt and
    every replay sends exactly these bytes with the same :attr:`webhook_id`.
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        # Partial indexes (migration 0012): each holds only the rows its queries read, which
        # are few (pending work, dead letters, notices) however many messages were sent;
        # the queries write the predicate's literal (app.delivery.outbox.IS_PENDING).
        # The claim query: due work, most urgent first, oldest first, in the index's own
        # order (migration 0018), so a claim reads the few rows it takes, not every pending
        # one: with a backlog, a sort of all of them came first on every claim.
        Index(
            "ix_deliveries_claim",
            column("urgency_rank").desc(),
            "next_attempt_at",
            "created_at",
            postgresql_where=text(f"status = '{PENDING_SQL}'"),
            sqlite_where=text(f"status = '{PENDING_SQL}'"),
        ),
        # The claim's count of each partner's live leases: the range of unexpired leases,
        # not all of the partner's pending rows (migration 0018).
        Index(
            "ix_deliveries_pending_partner",
            "partner_id",
            "lease_expires_at",
            postgresql_where=text(f"status = '{PENDING_SQL}'"),
            sqlite_where=text(f"status = '{PENDING_SQL}'"),
        ),
        # Dead letters: the admin's list, the coordinator's queue, the gauge.
        Index(
            "ix_deliveries_dead",
            "finished_at",
            postgresql_where=text("status = 'dead'"),
            sqlite_where=text("status = 'dead'"),
        ),
        # The webhook ids stored before revision 0016 stay unique; later rows store none.
        Index(
            "uq_deliveries_webhook_id",
            "webhook_id",
            unique=True,
            postgresql_where=text("webhook_id IS NOT NULL"),
            sqlite_where=text("webhook_id IS NOT NULL"),
        ),
        # A partner's notices (withdrawals) in its console inbox, newest first.
        Index(
            "ix_deliveries_notices",
            "partner_id",
            "created_at",
            postgresql_where=text(f"event_type IN {NOTICES_SQL}"),
            sqlite_where=text(f"event_type IN {NOTICES_SQL}"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    #: The ``webhook-id`` of a row written before revision 0016 (a random ``msg_`` id);
    #: None for every later row, whose id is derived from its own (:attr:`webhook_id`).
    stored_webhook_id: Mapped[str | None] = mapped_column("webhook_id", String(64))
    #: The referral this message is about; None for a non-identifying notification.
    referral_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("referrals.id"), index=True)
    #: The screening it comes from (set for notifications, which have no referral).
    screening_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("screenings.id"))
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id"))
    subject_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("subjects.id"))
    event_type: Mapped[str] = mapped_column(String(32))
    urgency_rank: Mapped[int] = mapped_column(SmallInteger)
    #: The body compressed (app.compact), then encrypted; bodies written before revision
    #: 0010 are encrypted uncompressed. Either way the partner gets the same bytes.
    body_ct: Mapped[bytes] = mapped_column(LargeBinary)
    #: SHA-256 of the bytes sent (hex in Python, 32 bytes stored).
    body_sha256: Mapped[str] = mapped_column(Digest)
    #: pending | delivered | rejected | dead | cancelled
    status: Mapped[str] = mapped_column(String(16))
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(200))
    needs_human: Mapped[bool] = mapped_column(Boolean, default=False)
    replays: Mapped[int] = mapped_column(Integer, default=0)
    #: The request that caused this message; sent to the partner as X-Request-ID.
    request_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def webhook_id(self) -> str:
        """The Standard Webhooks ``webhook-id`` partners deduplicate on: the one stored
        with the row if it has one, else derived from the row's id. Neither ever changes,
        so every attempt and every replay carries the same id."""
        return self.stored_webhook_id or webhook_id_of(self.id)


def webhook_id_of(delivery_id: uuid.UUID) -> str:
    """The ``webhook-id`` of a delivery written since revision 0016: ``msg_`` and its id's
    32 hex digits, the form ids had before (unique, as the primary key is)."""
    return f"msg_{delivery_id.hex}"


class DeliveryAttempt(Base):
    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("deliveries.id"), index=True)
    attempt_no: Mapped[int] = mapped_column(Integer)
    worker: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    #: retry | delivered | rejected | gone | dead | probe_failed
    outcome: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(String(200))
    #: The first bytes of the partner's answer (partners never receive notes back, and
    #: what they say is kept short).
    response_excerpt: Mapped[str | None] = mapped_column(String(512))


class PartnerCircuit(Base):
    """Per-partner circuit breaker, in the database so it holds across workers and replicas."""

    __tablename__ = "partner_circuits"

    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id"), primary_key=True)
    #: closed | open
    state: Mapped[str] = mapped_column(String(8), default="closed")
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: While open: no delivery to this partner is claimed before this time, and then only
    #: one (the probe).
    next_probe_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    probe_interval_seconds: Mapped[int] = mapped_column(Integer, default=30)
