"""The audit trail's tables. Both are append-only: the migration installs triggers that make
the database refuse UPDATE and DELETE (and TRUNCATE on PostgreSQL).

The columns are the hashed fields of an event, flattened so auditors can filter on them;
:mod:`app.audit.chain` defines how they are hashed.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.compact import AUDIT, CompactJSON, Digest
from app.models.base import Base, JSONType, UTCDateTime, filter_key, not_null


class AuditEvent(Base):
    """One link of the hash chain. ``seq`` is gapless from 1; ``hash`` commits to the event
    and, through ``prev_hash``, to every event before it."""

    __tablename__ = "audit_events"
    __table_args__ = (
        CheckConstraint("seq >= 1", name="seq_positive"),
        # Each filter of GET /v1/audit/events, followed by the page order (seq): migration
        # 0011; their keys and predicates: migration 0015 (after the class). A time window
        # becomes a seq range through (occurred_at, seq).
        Index("ix_audit_events_occurred_seq", "occurred_at", "seq"),
    )

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    #: SHA-256 digests, stored as their 32 bytes (migration 0013) and hex in Python: the
    #: hashed form and every reader see lowercase hex, the one text form of 32 bytes.
    prev_hash: Mapped[str] = mapped_column(Digest)
    hash: Mapped[str] = mapped_column(Digest)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    action: Mapped[str] = mapped_column(String(64))
    actor_type: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str | None] = mapped_column(String(64))
    actor_role: Mapped[str | None] = mapped_column(String(16))
    screening_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    referral_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    partner_id: Mapped[str | None] = mapped_column(String(64))
    subject_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    request_id: Mapped[str | None] = mapped_column(String(64))
    #: Compact JSON (app.compact, dictionary 2; migration 0014): the document written, read
    #: back as :class:`app.compact.Unreadable` if the stored bytes no longer read. On
    #: PostgreSQL its members are kept in the order of ``jsonb``, the column's type before.
    data: Mapped[dict[str, Any]] = mapped_column(CompactJSON(AUDIT, lenient=True, jsonb=True))


# The filters' indexes, each followed by seq (the page order). Partial: an event without
# a referral (a decision, a screening) is in no referral index; a query on a value implies
# the value is not null, which both engines' planners know. Text filters by filter_key.
Index(
    "ix_audit_events_action_seq",
    filter_key(AuditEvent.action),
    AuditEvent.seq,
)
Index(
    "ix_audit_events_actor_id_seq",
    filter_key(AuditEvent.actor_id),
    AuditEvent.seq,
    **not_null("actor_id"),
)
Index(
    "ix_audit_events_partner_seq",
    filter_key(AuditEvent.partner_id),
    AuditEvent.seq,
    **not_null("partner_id"),
)
Index(
    "ix_audit_events_screening_seq",
    AuditEvent.screening_id,
    AuditEvent.seq,
    **not_null("screening_id"),
)
Index(
    "ix_audit_events_referral_seq",
    AuditEvent.referral_id,
    AuditEvent.seq,
    **not_null("referral_id"),
)
Index(
    "ix_audit_events_subject_seq",
    AuditEvent.subject_id,
    AuditEvent.seq,
    **not_null("subject_id"),
)


class AuditCheckpoint(Base):
    """A signed statement about the first ``seq`` events, made at ``signed_at``.

    A tree checkpoint (``note`` set) is the C2SP signed note stating that the Merkle tree of
    the first ``seq`` events has ``root`` (base64); ``hash`` is the chain head then, kept
    unsigned. One without a note (signed before the tree existed) signed ``hash``.
    The private key is never in the database; ``key_id`` names the public key that verifies
    ``signature`` (see docs/audit.md).
    """

    __tablename__ = "audit_checkpoints"
    __table_args__ = (CheckConstraint("seq >= 1", name="seq_positive"),)

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    key_id: Mapped[str] = mapped_column(String(32))
    signature: Mapped[str] = mapped_column(String(128))
    root: Mapped[str | None] = mapped_column(String(44))
    note: Mapped[str | None] = mapped_column(Text)


class AuditTreeNode(Base):
    """A perfect subtree of the Merkle tree over the events' hashes (RFC 9162): node
    ``(level, idx)`` covers events ``idx * 2**level + 1`` to ``(idx + 1) * 2**level``. Only
    levels 8 and up are stored (app.audit.tree); append-only like the events."""

    __tablename__ = "audit_tree_nodes"
    __table_args__ = (CheckConstraint("level >= 8 AND idx >= 0", name="in_range"),)

    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class AuditVerificationState(Base):
    """The one row (``id`` 1) that says how far the chain is verified and how the background
    full verification goes (app.audit.verification). Not part of the evidence: a cache of
    verification work, which the full walk re-does from seq 1.

    ``frontier_*``: every event up to ``frontier_seq`` was verified (chain, hashes, every
    checkpoint up to it); ``frontier_hash`` is event ``frontier_seq``'s hash and
    ``frontier_tree`` the tree's compact range there (base64), so the next verification
    starts from there. ``walk_*``: the full walk in progress (leased by one process);
    ``last_walk_*``: the last one that finished.
    """

    __tablename__ = "audit_verification_state"
    __table_args__ = (CheckConstraint("id = 1", name="one_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    frontier_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    frontier_hash: Mapped[str | None] = mapped_column(String(64))
    frontier_tree: Mapped[list[str]] = mapped_column(JSONType, default=list)
    walk_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    walk_owner: Mapped[str | None] = mapped_column(String(64))
    walk_lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    walk_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    walk_progress_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    walk_target_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    last_walk_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_walk_finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_walk_ok: Mapped[bool | None] = mapped_column(Boolean)
    last_walk_to_seq: Mapped[int | None] = mapped_column(BigInteger)
    last_walk_first_bad_seq: Mapped[int | None] = mapped_column(BigInteger)
    last_walk_reason: Mapped[str | None] = mapped_column(String(64))
    last_walk_checkpoint_seq: Mapped[int | None] = mapped_column(BigInteger)


class AuditWitnessCursor(Base):
    """How far one witness has been sent the log's checkpoints (app.audit.witness): the
    checkpoints table is the outbox, and each witness reads it in order from here.
    ``witness`` names it without its URL (``https:<hash>`` or ``file:<hash>``)."""

    __tablename__ = "audit_witness_cursors"

    witness: Mapped[str] = mapped_column(String(40), primary_key=True)
    delivered_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(200))
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
