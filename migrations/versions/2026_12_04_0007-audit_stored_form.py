"""audit: the Merkle tree's nodes and tree checkpoints, verification state, witness
cursors; on SQLite, canonical stored forms and no replacement of audit rows

``audit_tree_nodes`` holds the perfect subtrees (level 8 and up) of the RFC 9162 tree over
the events' hashes, extended when a checkpoint is signed; it is append-only like the events.
``audit_checkpoints`` gains ``root`` and ``note`` for C2SP tlog checkpoints.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 05:40:00

SQLite keeps a UUID as text and a time as text, and an event's hash is computed over the
canonical forms (lowercase UUID, one time format). Without a constraint, the same UUID in
upper case would hash the same but no longer match an auditor's query, so a case's events
could be hidden while every check said intact. CHECK constraints now hold every stored UUID
to 32 lowercase hex digits and every time to SQLAlchemy's one format (the verifier reads the
stored text, so a row that escapes them fails its hash).

SQLite's ``INSERT OR REPLACE`` deletes the conflicting row without firing DELETE triggers;
a BEFORE INSERT trigger now refuses any row whose seq (or hash) is already taken, so the
append-only tables cannot be rewritten that way. On PostgreSQL, ``INSERT … ON CONFLICT DO
UPDATE`` already fires the UPDATE trigger, and its uuid and timestamptz types have one form:
nothing changes there.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UUID_COLUMNS = ("screening_id", "referral_id", "subject_id")
#: SQLAlchemy's SQLite DATETIME text: "2026-11-23 00:48:30.123456".
TIME_GLOB = (
    "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9]"
    ".[0-9][0-9][0-9][0-9][0-9][0-9]"
)


def uuid_check(column: str) -> str:
    return (
        f"{column} IS NULL OR (typeof({column}) = 'text' AND length({column}) = 32 "
        f"AND {column} NOT GLOB '*[^0-9a-f]*')"
    )


TIME_CHECK = (
    f"typeof(occurred_at) = 'text' AND length(occurred_at) = 26 AND occurred_at GLOB '{TIME_GLOB}'"
)


def _append_only_triggers(table: str) -> None:
    for verb in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER IF NOT EXISTS {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, 'ruta audit: {verb} on {table} is refused; "
            "the audit trail is append-only'); END"
        )


def _no_replace_trigger(table: str, taken: str) -> None:
    op.execute(
        f"CREATE TRIGGER {table}_no_replace BEFORE INSERT ON {table} "  # noqa: S608 (constants)
        f"WHEN EXISTS (SELECT 1 FROM {table} WHERE {taken}) "
        f"BEGIN SELECT RAISE(ABORT, 'ruta audit: replacing a row of {table} is refused; "
        "the audit trail is append-only'); END"
    )


def _tree_upgrade() -> None:
    op.create_table(
        "audit_tree_nodes",
        sa.Column("level", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.CheckConstraint("level >= 8 AND idx >= 0", name=op.f("ck_audit_tree_nodes_in_range")),
        sa.PrimaryKeyConstraint("level", "idx", name=op.f("pk_audit_tree_nodes")),
    )
    with op.batch_alter_table("audit_checkpoints", schema=None) as batch_op:
        batch_op.add_column(sa.Column("root", sa.String(length=44), nullable=True))
        batch_op.add_column(sa.Column("note", sa.Text(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE TRIGGER audit_tree_nodes_append_only BEFORE UPDATE OR DELETE ON "
            "audit_tree_nodes FOR EACH ROW EXECUTE FUNCTION ruta_audit_refuse_change()"
        )
        op.execute(
            "CREATE TRIGGER audit_tree_nodes_no_truncate BEFORE TRUNCATE ON audit_tree_nodes "
            "FOR EACH STATEMENT EXECUTE FUNCTION ruta_audit_refuse_change()"
        )
    else:
        _append_only_triggers("audit_tree_nodes")
        _no_replace_trigger("audit_tree_nodes", "level = NEW.level AND idx = NEW.idx")


JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _state_upgrade() -> None:
    op.create_table(
        "audit_verification_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("frontier_seq", sa.BigInteger(), nullable=False),
        sa.Column("frontier_hash", sa.String(length=64), nullable=True),
        sa.Column("frontier_tree", JSON, nullable=False),
        sa.Column("walk_requested", sa.Boolean(), nullable=False),
        sa.Column("walk_owner", sa.String(length=64), nullable=True),
        sa.Column("walk_lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("walk_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("walk_progress_seq", sa.BigInteger(), nullable=False),
        sa.Column("walk_target_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_walk_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_walk_finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_walk_ok", sa.Boolean(), nullable=True),
        sa.Column("last_walk_to_seq", sa.BigInteger(), nullable=True),
        sa.Column("last_walk_first_bad_seq", sa.BigInteger(), nullable=True),
        sa.Column("last_walk_reason", sa.String(length=64), nullable=True),
        sa.Column("last_walk_checkpoint_seq", sa.BigInteger(), nullable=True),
        sa.CheckConstraint("id = 1", name=op.f("ck_audit_verification_state_one_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_verification_state")),
    )
    op.create_table(
        "audit_witness_cursors",
        sa.Column("witness", sa.String(length=40), nullable=False),
        sa.Column("delivered_seq", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=200), nullable=True),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("witness", name=op.f("pk_audit_witness_cursors")),
    )
    op.execute(
        "INSERT INTO audit_verification_state (id, frontier_seq, frontier_tree, "
        "walk_requested, walk_progress_seq, walk_target_seq) VALUES (1, 0, '[]', true, 0, 0)"
    )


def _tree_downgrade() -> None:
    op.drop_table("audit_witness_cursors")
    op.drop_table("audit_verification_state")
    if op.get_bind().dialect.name == "sqlite":
        # Batch mode rebuilds the table, which drops its triggers: make them again after.
        with op.batch_alter_table("audit_checkpoints", schema=None) as batch_op:
            batch_op.drop_column("note")
            batch_op.drop_column("root")
        _append_only_triggers("audit_checkpoints")
    else:
        op.drop_column("audit_checkpoints", "note")
        op.drop_column("audit_checkpoints", "root")
    op.drop_table("audit_tree_nodes")


def upgrade() -> None:
    _tree_upgrade()
    _state_upgrade()
    if op.get_bind().dialect.name != "sqlite":
        return
    # Rebuilding the table drops its triggers; they are made again below.
    with op.batch_alter_table("audit_events", recreate="always") as batch_op:
        for column in UUID_COLUMNS:
            batch_op.create_check_constraint(f"{column}_canonical", uuid_check(column))
        batch_op.create_check_constraint("occurred_at_canonical", TIME_CHECK)
    _append_only_triggers("audit_events")
    _no_replace_trigger("audit_events", "seq = NEW.seq OR hash = NEW.hash")
    _no_replace_trigger("audit_checkpoints", "seq = NEW.seq")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        _tree_downgrade()
        return
    op.execute("DROP TRIGGER IF EXISTS audit_checkpoints_no_replace")
    op.execute("DROP TRIGGER IF EXISTS audit_events_no_replace")
    with op.batch_alter_table("audit_events", recreate="always") as batch_op:
        for column in UUID_COLUMNS:
            batch_op.drop_constraint(f"{column}_canonical", type_="check")
        batch_op.drop_constraint("occurred_at_canonical", type_="check")
    _append_only_triggers("audit_events")
    _tree_downgrade()
