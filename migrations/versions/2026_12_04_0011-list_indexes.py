"""list indexes: every filter of the referral log and of the audit events, index-ordered

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 09:40:00.000000

The referral log (``GET /v1/referrals``, the console's log) pages newest first on
``(created_at, id)``; the audit events (``GET /v1/audit/events``) page on ``seq``. Each
filter gets an index whose leading column is the filter and whose next columns are the
page order, so the first page and every later page (a keyset range, never an OFFSET) read
only the rows they return (docs/performance.md, "Auditors' queries at a million
referrals"):

- referrals: ``(created_at, id)`` (replaces ``(created_at)``), and ``(status | service |
  urgency | partner_id | region, created_at, id)``; ``(region, urgency, created_at, id)``
  for the combination the issue names (emergencies in a region).
- referrals, a partner's inbox (the console): partial indexes on the open referrals
  ``(partner_id, urgency, created_at, id)`` and on the closed ones ``(partner_id,
  updated_at, id)``, read a partner and an urgency at a time.
- audit_events: ``(occurred_at, seq)`` (replaces ``(occurred_at)``: a time window is
  turned into a seq range), and ``(screening_id | referral_id | partner_id | subject_id,
  seq)`` (replace the single-column ones). ``(action, seq)`` and ``(actor_id, seq)``
  already existed.

No column changes, so nothing to backfill: every filtered value is a real column already.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: (table, old index and its columns or None, new index and its columns)
_REPLACED: tuple[tuple[str, str, list[str], str, list[str]], ...] = (
    (
        "referrals",
        "ix_referrals_created_at",
        ["created_at"],
        "ix_referrals_created_id",
        ["created_at", "id"],
    ),
    (
        "audit_events",
        "ix_audit_events_occurred_at",
        ["occurred_at"],
        "ix_audit_events_occurred_seq",
        ["occurred_at", "seq"],
    ),
    (
        "audit_events",
        "ix_audit_events_screening_id",
        ["screening_id"],
        "ix_audit_events_screening_seq",
        ["screening_id", "seq"],
    ),
    (
        "audit_events",
        "ix_audit_events_referral_id",
        ["referral_id"],
        "ix_audit_events_referral_seq",
        ["referral_id", "seq"],
    ),
    (
        "audit_events",
        "ix_audit_events_partner_id",
        ["partner_id"],
        "ix_audit_events_partner_seq",
        ["partner_id", "seq"],
    ),
    (
        "audit_events",
        "ix_audit_events_subject_id",
        ["subject_id"],
        "ix_audit_events_subject_seq",
        ["subject_id", "seq"],
    ),
)

_ADDED: tuple[tuple[str, list[str]], ...] = (
    ("ix_referrals_status_created", ["status", "created_at", "id"]),
    ("ix_referrals_service_created", ["service", "created_at", "id"]),
    ("ix_referrals_urgency_created", ["urgency", "created_at", "id"]),
    ("ix_referrals_partner_created", ["partner_id", "created_at", "id"]),
    ("ix_referrals_region_created", ["region", "created_at", "id"]),
    ("ix_referrals_region_urgency_created", ["region", "urgency", "created_at", "id"]),
)


#: The statuses a partner still works on, as written when this revision was made.
_OPEN = "('queued', 'delivered', 'received', 'accepted', 'in-progress', 'on-hold')"
#: A partner's inbox: (name, columns, predicate), partial indexes.
_INBOX: tuple[tuple[str, list[str], str], ...] = (
    (
        "ix_referrals_inbox_open",
        ["partner_id", "urgency", "created_at", "id"],
        f"status IN {_OPEN}",
    ),
    ("ix_referrals_inbox_closed", ["partner_id", "updated_at", "id"], f"status NOT IN {_OPEN}"),
)


def upgrade() -> None:
    for table, old, _old_columns, new, new_columns in _REPLACED:
        op.create_index(new, table, new_columns, unique=False)
        op.drop_index(old, table_name=table)
    for name, columns in _ADDED:
        op.create_index(name, "referrals", columns, unique=False)
    for name, columns, where in _INBOX:
        op.create_index(
            name,
            "referrals",
            columns,
            unique=False,
            postgresql_where=sa.text(where),
            sqlite_where=sa.text(where),
        )
    # Fresh statistics, so the planner picks the new indexes at once on a large table.
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ANALYZE referrals")
        op.execute("ANALYZE audit_events")


def downgrade() -> None:
    for name, _columns, _where in reversed(_INBOX):
        op.drop_index(name, table_name="referrals")
    for name, _columns in reversed(_ADDED):
        op.drop_index(name, table_name="referrals")
    for table, old, old_columns, new, _new_columns in reversed(_REPLACED):
        op.create_index(old, table, old_columns, unique=False)
        op.drop_index(new, table_name=table)
