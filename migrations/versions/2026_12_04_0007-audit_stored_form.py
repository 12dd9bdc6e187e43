"""audit: on SQLite, canonical stored forms and no replacement of audit rows

Revision ID: 0007
Revises: 0005
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

from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0005"
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


def upgrade() -> None:
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
        return
    op.execute("DROP TRIGGER IF EXISTS audit_checkpoints_no_replace")
    op.execute("DROP TRIGGER IF EXISTS audit_events_no_replace")
    with op.batch_alter_table("audit_events", recreate="always") as batch_op:
        for column in UUID_COLUMNS:
            batch_op.drop_constraint(f"{column}_canonical", type_="check")
        batch_op.drop_constraint("occurred_at_canonical", type_="check")
    _append_only_triggers("audit_events")
