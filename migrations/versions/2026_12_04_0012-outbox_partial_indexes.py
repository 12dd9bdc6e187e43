"""outbox partial indexes: index only the outbox rows that queries look for

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 15:00:00.000000

Every message ever sent stays in ``deliveries``; the queries that need an index read only
the few rows still pending (the claim, and its count of each partner's live leases), the
dead letters, or a partner's notices. The two full indexes ``(status, urgency_rank,
next_attempt_at)`` and ``(partner_id, status)`` held an entry for every message, and a new
one at each change of status; they are replaced by partial indexes that hold only those
rows (docs/performance.md, "Storage per screening"):

- ``ix_deliveries_claim`` ``(urgency_rank, next_attempt_at) WHERE status = 'pending'``
- ``ix_deliveries_pending_partner`` ``(partner_id) WHERE status = 'pending'``
- ``ix_deliveries_dead`` ``(finished_at) WHERE status = 'dead'``
- ``ix_deliveries_notices`` ``(partner_id, created_at) WHERE event_type IN
  ('referral.revoked', 'referral.consent_withdrawn')``

No column changes: every row is indexed by what it holds, on upgrade and on downgrade.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: As written when this revision was made.
_PENDING = "status = 'pending'"
_NOTICES = "event_type IN ('referral.revoked', 'referral.consent_withdrawn')"

#: (name, columns, predicate) of the partial indexes this revision creates.
_PARTIAL: tuple[tuple[str, list[str], str], ...] = (
    ("ix_deliveries_claim", ["urgency_rank", "next_attempt_at"], _PENDING),
    ("ix_deliveries_pending_partner", ["partner_id"], _PENDING),
    ("ix_deliveries_dead", ["finished_at"], "status = 'dead'"),
    ("ix_deliveries_notices", ["partner_id", "created_at"], _NOTICES),
)
#: (name, columns) of the full indexes they replace.
_FULL: tuple[tuple[str, list[str]], ...] = (
    ("ix_deliveries_claim", ["status", "urgency_rank", "next_attempt_at"]),
    ("ix_deliveries_partner_status", ["partner_id", "status"]),
)


def upgrade() -> None:
    for name, _columns in _FULL:
        op.drop_index(name, table_name="deliveries")
    for name, columns, where in _PARTIAL:
        op.create_index(
            name,
            "deliveries",
            columns,
            unique=False,
            postgresql_where=sa.text(where),
            sqlite_where=sa.text(where),
        )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ANALYZE deliveries")


def downgrade() -> None:
    for name, _columns, _where in reversed(_PARTIAL):
        op.drop_index(name, table_name="deliveries")
    for name, columns in _FULL:
        op.create_index(name, "deliveries", columns, unique=False)
