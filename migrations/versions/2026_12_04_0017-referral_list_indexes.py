"""referral list indexes: four-byte keys, no id, so pages fill

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04 18:30:00

The referral log's and the inbox's indexes of migration 0011 are rebuilt the way 0015
rebuilt the audit trail's: each text filter keyed by ``hashtext(x)`` on PostgreSQL, and
``id`` no longer in the key (``(hashtext(x), created_at)`` is a 24-byte entry, against 48
to 64 for ``(x, created_at, id)``). PostgreSQL then splits a full page where the new
entry goes (each value's referrals are appended at the end of its own run) instead of in
half, and the half-empty pages those splits left, never filled again, are gone
(docs/performance.md, "Referral list indexes"). Two texts may share a hash: every query
compares the text too (``app.models.base.matches``), and extended statistics
``st_referrals_<column>`` on ``(x, hashtext(x))`` tell the planner the two conditions
select the same rows. Rows that share a ``created_at`` (rare) are put in ``id`` order as
they are read (an incremental sort of the tie). ``partner_id``'s index holds only
referrals that have a partner (not those on hold for want of one). ``(created_at, id)``
becomes ``(created_at)``. SQLite gets the same shapes with the text itself.

No row changes. The indexes are rebuilt in the migration's transaction, holding writes to
``referrals`` meanwhile: about half a second per index per million referrals on
PostgreSQL (docs/operations.md). Both ways: the downgrade restores 0011's.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | Sequence[str] | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN = "('queued', 'delivered', 'received', 'accepted', 'in-progress', 'on-hold')"
HASHED = ("status", "service", "urgency", "partner_id", "region")

#: name: (0017's key, 0011's key, predicate); "#x" is x keyed by hashtext on PostgreSQL.
INDEXES: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "status_created": (("#status", "created_at"), ("status", "created_at", "id"), ""),
    "service_created": (("#service", "created_at"), ("service", "created_at", "id"), ""),
    "urgency_created": (("#urgency", "created_at"), ("urgency", "created_at", "id"), ""),
    "partner_created": (
        ("#partner_id", "created_at"),
        ("partner_id", "created_at", "id"),
        "partner_id IS NOT NULL",
    ),
    "region_created": (("#region", "created_at"), ("region", "created_at", "id"), ""),
    "region_urgency_created": (
        ("#region", "#urgency", "created_at"),
        ("region", "urgency", "created_at", "id"),
        "",
    ),
    "inbox_open": (
        ("#partner_id", "#urgency", "created_at"),
        ("partner_id", "urgency", "created_at", "id"),
        f"status IN {OPEN}",
    ),
    "inbox_closed": (
        ("#partner_id", "updated_at"),
        ("partner_id", "updated_at", "id"),
        f"status NOT IN {OPEN}",
    ),
}


def _create(name: str, key: tuple[str, ...], where: str, postgresql: bool) -> None:
    columns = ", ".join(
        (f"hashtext({c[1:]})" if postgresql else c[1:]) if c.startswith("#") else c for c in key
    )
    predicate = f" WHERE {where}" if where else ""
    op.execute(f"CREATE INDEX ix_referrals_{name} ON referrals ({columns}){predicate}")


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    op.drop_index("ix_referrals_created_id", table_name="referrals")
    op.create_index("ix_referrals_created", "referrals", ["created_at"], unique=False)
    for name, (key, _old, where) in INDEXES.items():
        op.drop_index(f"ix_referrals_{name}", table_name="referrals")
        _create(name, key, where, postgresql)
    if postgresql:
        for column in HASHED:
            op.execute(
                f"CREATE STATISTICS st_referrals_{column} (mcv, dependencies) "
                f"ON {column}, hashtext({column}) FROM referrals"
            )
        op.execute("ANALYZE referrals")


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        for column in HASHED:
            op.execute(f"DROP STATISTICS st_referrals_{column}")
    for name, (_key, old, where) in INDEXES.items():
        op.drop_index(f"ix_referrals_{name}", table_name="referrals")
        _create(name, old, where, postgresql)
    op.drop_index("ix_referrals_created", table_name="referrals")
    op.create_index("ix_referrals_created_id", "referrals", ["created_at", "id"], unique=False)
