"""outbox claim in index order: the claim reads the rows it takes, not the whole backlog

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-04 21:30:00

The claim orders due deliveries by ``urgency_rank DESC, next_attempt_at, created_at``;
0012's ``ix_deliveries_claim`` ``(urgency_rank, next_attempt_at)`` cannot give that order
(one column descending, the next ascending, and ``created_at`` missing), so every claim
read every pending due row and sorted them all before taking ten. Under load, with a
backlog of a few thousand, that sort was the largest single cost in PostgreSQL, and the
emergency it was there to put first waited behind it (docs/performance.md, "Where the
emergency's time went"). The index now holds that order, so a claim is one index range.

The claim's count of each partner's live leases read all of the partner's pending rows
through ``(partner_id)``; ``(partner_id, lease_expires_at)`` reads only the unexpired
leases, at most the per-partner cap.

Both indexes stay partial (``WHERE status = 'pending'``): they hold pending work only. No
row changes; the two indexes are rebuilt in the migration's transaction, over pending
rows only. The downgrade restores 0012's.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | Sequence[str] | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: As written when this revision was made.
_PENDING = "status = 'pending'"

#: name: (0018's key, 0012's key)
_INDEXES: dict[str, tuple[list[str], list[str]]] = {
    "ix_deliveries_claim": (
        ["urgency_rank DESC", "next_attempt_at", "created_at"],
        ["urgency_rank", "next_attempt_at"],
    ),
    "ix_deliveries_pending_partner": (["partner_id", "lease_expires_at"], ["partner_id"]),
}


def _build(name: str, key: list[str]) -> None:
    op.drop_index(name, table_name="deliveries")
    op.create_index(
        name,
        "deliveries",
        [sa.text(part) if " " in part else part for part in key],
        unique=False,
        postgresql_where=sa.text(_PENDING),
        sqlite_where=sa.text(_PENDING),
    )


def upgrade() -> None:
    for name, (key, _before) in _INDEXES.items():
        _build(name, key)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ANALYZE deliveries")


def downgrade() -> None:
    for name, (_key, before) in _INDEXES.items():
        _build(name, before)
