"""audit: hash-chained events, signed checkpoints, append-only triggers

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 00:58:00

The triggers are what makes the tables append-only for the application's own database role:
PostgreSQL raises on UPDATE, DELETE and TRUNCATE; SQLite aborts UPDATE and DELETE. They are
not the security boundary (an owner can drop a trigger); the hash chain and the signed
checkpoints kept outside the database are. See docs/audit.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("audit_events", "audit_checkpoints")

PG_FUNCTION = """
CREATE FUNCTION ruta_audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ruta audit: % on % is refused; the audit trail is append-only',
        TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$
"""


#: Takes the chain lock, then reads the head, in one round trip. Being VOLATILE, the SELECT
#: runs on a snapshot taken after the lock is granted, so it sees the previous holder's
#: committed events (READ COMMITTED).
PG_LOCK_HEAD = """
CREATE FUNCTION ruta_audit_lock_head(lock_key bigint)
RETURNS TABLE (seq bigint, hash varchar, occurred_at timestamptz)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(lock_key);
    RETURN QUERY SELECT e.seq, e.hash, e.occurred_at FROM audit_events AS e
        ORDER BY e.seq DESC LIMIT 1;
END;
$$
"""


def _create_triggers() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute(PG_FUNCTION)
        op.execute(PG_LOCK_HEAD)
        for table in TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION ruta_audit_refuse_change()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION ruta_audit_refuse_change()"
            )
    else:
        for table in TABLES:
            for verb in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, 'ruta audit: {verb} on {table} is refused; "
                    "the audit trail is append-only'); END"
                )


def _drop_triggers() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        op.execute("DROP FUNCTION IF EXISTS ruta_audit_refuse_change()")
        op.execute("DROP FUNCTION IF EXISTS ruta_audit_lock_head(bigint)")
    else:
        for table in TABLES:
            for verb in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{verb}")


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("actor_type", sa.String(length=16), nullable=False),
        sa.Column("actor_id", sa.String(length=64), nullable=True),
        sa.Column("actor_role", sa.String(length=16), nullable=True),
        sa.Column("screening_id", sa.Uuid(), nullable=True),
        sa.Column("referral_id", sa.Uuid(), nullable=True),
        sa.Column("partner_id", sa.String(length=64), nullable=True),
        sa.Column("subject_id", sa.Uuid(), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("data", JSON, nullable=False),
        sa.CheckConstraint("seq >= 1", name=op.f("ck_audit_events_seq_positive")),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_events")),
        sa.UniqueConstraint("hash", name=op.f("uq_audit_events_hash")),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index("ix_audit_events_occurred_at", ["occurred_at"], unique=False)
        batch_op.create_index("ix_audit_events_action_seq", ["action", "seq"], unique=False)
        batch_op.create_index("ix_audit_events_actor_id_seq", ["actor_id", "seq"], unique=False)
        batch_op.create_index("ix_audit_events_screening_id", ["screening_id"], unique=False)
        batch_op.create_index("ix_audit_events_referral_id", ["referral_id"], unique=False)
        batch_op.create_index("ix_audit_events_partner_id", ["partner_id"], unique=False)
        batch_op.create_index("ix_audit_events_subject_id", ["subject_id"], unique=False)
    op.create_table(
        "audit_checkpoints",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.CheckConstraint("seq >= 1", name=op.f("ck_audit_checkpoints_seq_positive")),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_checkpoints")),
    )
    _create_triggers()


def downgrade() -> None:
    _drop_triggers()
    op.drop_table("audit_checkpoints")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_events_subject_id")
        batch_op.drop_index("ix_audit_events_partner_id")
        batch_op.drop_index("ix_audit_events_referral_id")
        batch_op.drop_index("ix_audit_events_screening_id")
        batch_op.drop_index("ix_audit_events_actor_id_seq")
        batch_op.drop_index("ix_audit_events_action_seq")
        batch_op.drop_index("ix_audit_events_occurred_at")
    op.drop_table("audit_events")
