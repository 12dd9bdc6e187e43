"""audit filter indexes: four-byte keys for the text filters, partial for the references

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04 18:00:00

The six filter indexes of ``audit_events`` (migration 0011) are rebuilt:

- ``(action, seq)``, ``(actor_id, seq)`` and ``(partner_id, seq)`` become
  ``(hashtext(x), seq)`` on PostgreSQL. An entry is 24 bytes instead of 40 to 56, and
  PostgreSQL then splits a full page where the new entry goes (each value's events are
  appended at the end of its own run of the index) instead of in half: the half-empty
  pages those splits left were never filled again, since no earlier seq ever comes. As
  written, the three indexes take about a third of their former size
  (docs/performance.md, "Audit indexes"). Two texts may share a hash: every query
  compares the text too (``app.models.audit.matches``). SQLite keeps the text.
- The actor, partner, screening, referral and subject indexes hold only events that have
  one (``WHERE x IS NOT NULL``): a decision names no referral, a screening no partner.
  A query on a value implies the value is not null, which both engines' planners know.
- On PostgreSQL, statistics ``st_audit_events_<column>`` on ``(x, hashtext(x))`` tell the
  planner that the two conditions of a query (``hashtext(x) = hashtext(v) AND x = v``)
  select the same rows: estimated apart, their selectivities were multiplied, a common
  partner's events were taken for a handful and read in full, then sorted.

No row changes; what is hashed does not change. The indexes are rebuilt in the
migration's transaction: writes to the audit trail wait meanwhile (about 2 s per million
events on PostgreSQL, docs/operations.md). Both ways: the downgrade restores 0011's.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: name, column, keyed by hashtext on PostgreSQL, partial on non-null.
INDEXES = (
    ("ix_audit_events_action_seq", "action", True, False),
    ("ix_audit_events_actor_id_seq", "actor_id", True, True),
    ("ix_audit_events_partner_seq", "partner_id", True, True),
    ("ix_audit_events_screening_seq", "screening_id", False, True),
    ("ix_audit_events_referral_seq", "referral_id", False, True),
    ("ix_audit_events_subject_seq", "subject_id", False, True),
)


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for name, column, hashed, partial in INDEXES:
        key = f"hashtext({column})" if hashed and postgresql else column
        where = f" WHERE {column} IS NOT NULL" if partial else ""
        op.drop_index(name, table_name="audit_events")
        op.execute(f"CREATE INDEX {name} ON audit_events ({key}, seq){where}")
        if hashed and postgresql:
            op.execute(
                f"CREATE STATISTICS st_audit_events_{column} (mcv, dependencies) "
                f"ON {column}, hashtext({column}) FROM audit_events"
            )
    if postgresql:
        op.execute("ANALYZE audit_events")


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for name, column, hashed, _partial in INDEXES:
        if hashed and postgresql:
            op.execute(f"DROP STATISTICS st_audit_events_{column}")
        op.drop_index(name, table_name="audit_events")
        op.create_index(name, "audit_events", [column, "seq"], unique=False)
