"""audit compact: event hashes stored as 32 bytes, no unique index on the hash

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 15:00:00

``audit_events.hash`` and ``prev_hash`` held 64 lowercase hex characters each; they now hold
the digest's 32 bytes (``bytea`` on PostgreSQL, a blob on SQLite), and a CHECK holds every
row to exactly that (docs/audit.md, "Stored form"). The hashed form does not change: an
event's body still carries ``prev_hash`` in lowercase hex, which is the one text form of 32
bytes, so every hash, checkpoint, tree node and proof stays valid, and the API and exports
still show hex. ``uq_audit_events_hash`` goes: no query looks an event up by its hash (they
go by seq), and the chain itself makes hashes distinct (each one commits to its seq). On
SQLite the trigger that refuses ``INSERT OR REPLACE`` now watches the one unique key left,
``seq``. ``ruta_audit_lock_head`` returns the head's hash as ``bytea``.

The conversion refuses to run if a stored hash is not 64 lowercase hex digits: converting
it would turn an event that fails verification into one that might pass. Run ``ruta audit
verify`` and look at the event first.

Both ways: the downgrade writes the hex back and restores the unique index.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("prev_hash", "hash")
_CHUNK = 5000

LOCK_HEAD = """
CREATE FUNCTION ruta_audit_lock_head(lock_key bigint)
RETURNS TABLE (seq bigint, hash {hash_type}, occurred_at timestamptz)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(lock_key);
    RETURN QUERY SELECT e.seq, e.hash, e.occurred_at FROM audit_events AS e
        ORDER BY e.seq DESC LIMIT 1;
END;
$$
"""


class NotCanonical(RuntimeError):
    """A stored hash is not in the one form the writer writes."""


def _refuse(seq: Any) -> NotCanonical:
    return NotCanonical(
        f"audit event {seq} has a hash that is not 64 lowercase hex digits; converting it "
        "could hide tampering. Run `ruta audit verify` and look at it before upgrading."
    )


def _set_lock_head(hash_type: str) -> None:
    op.execute("DROP FUNCTION ruta_audit_lock_head(bigint)")
    op.execute(LOCK_HEAD.format(hash_type=hash_type))


def _postgresql_upgrade() -> None:
    bad = op.get_bind().execute(
        sa.text(
            "SELECT seq FROM audit_events WHERE hash !~ '^[0-9a-f]{64}$' "
            "OR prev_hash !~ '^[0-9a-f]{64}$' ORDER BY seq LIMIT 1"
        )
    )
    first = bad.scalar_one_or_none()
    if first is not None:
        raise _refuse(first)
    op.drop_constraint("uq_audit_events_hash", "audit_events", type_="unique")
    # One rewrite of the table; ALTER ... TYPE fires no row trigger.
    op.execute(
        "ALTER TABLE audit_events "
        "ALTER COLUMN prev_hash TYPE bytea USING decode(prev_hash, 'hex'), "
        "ALTER COLUMN hash TYPE bytea USING decode(hash, 'hex')"
    )
    for column in COLUMNS:
        op.create_check_constraint(
            op.f(f"ck_audit_events_{column}_bytes"), "audit_events", f"octet_length({column}) = 32"
        )
    _set_lock_head("bytea")


def _postgresql_downgrade() -> None:
    for column in COLUMNS:
        op.drop_constraint(op.f(f"ck_audit_events_{column}_bytes"), "audit_events", type_="check")
    op.execute(
        "ALTER TABLE audit_events "
        "ALTER COLUMN prev_hash TYPE varchar(64) USING encode(prev_hash, 'hex'), "
        "ALTER COLUMN hash TYPE varchar(64) USING encode(hash, 'hex')"
    )
    op.create_unique_constraint("uq_audit_events_hash", "audit_events", ["hash"])
    _set_lock_head("varchar")


def _sqlite_rewrite(change: Callable[[Any, Any], tuple[Any, Any]]) -> None:
    """Every row's (prev_hash, hash) replaced by ``change(seq, value)``, in seq chunks.
    The append-only triggers must be off."""
    bind = op.get_bind()
    last = 0
    while True:
        rows = bind.execute(
            sa.text(
                "SELECT seq, prev_hash, hash FROM audit_events WHERE seq > :last "
                "ORDER BY seq LIMIT :n"
            ),
            {"last": last, "n": _CHUNK},
        ).all()
        if not rows:
            return
        last = rows[-1][0]
        params = []
        for seq, prev_hash, hash_ in rows:
            prev_value, hash_value = change(seq, (prev_hash, hash_))
            params.append({"s": seq, "p": prev_value, "h": hash_value})
        bind.execute(
            sa.text("UPDATE audit_events SET prev_hash = :p, hash = :h WHERE seq = :s"), params
        )


def _to_bytes(seq: Any, values: Any) -> tuple[bytes, bytes]:
    out = []
    for value in values:
        if not (isinstance(value, str) and len(value) == 64 and value == value.lower()):
            raise _refuse(seq)
        try:
            out.append(bytes.fromhex(value))
        except ValueError:
            raise _refuse(seq) from None
    return out[0], out[1]


def _to_hex(_seq: Any, values: Any) -> tuple[str, str]:
    return bytes(values[0]).hex(), bytes(values[1]).hex()


def _sqlite_triggers(taken: str) -> None:
    for verb in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER audit_events_no_{verb.lower()} BEFORE {verb} ON audit_events "
            f"BEGIN SELECT RAISE(ABORT, 'ruta audit: {verb} on audit_events is refused; "
            "the audit trail is append-only'); END"
        )
    op.execute(
        "CREATE TRIGGER audit_events_no_replace BEFORE INSERT ON audit_events "  # noqa: S608
        f"WHEN EXISTS (SELECT 1 FROM audit_events WHERE {taken}) "
        "BEGIN SELECT RAISE(ABORT, 'ruta audit: replacing a row of audit_events is refused; "
        "the audit trail is append-only'); END"
    )


def _sqlite_drop_triggers() -> None:
    for name in ("no_update", "no_delete", "no_replace"):
        op.execute(f"DROP TRIGGER IF EXISTS audit_events_{name}")


def _sqlite_upgrade() -> None:
    # Checked before anything changes: the rewrite below checks every value again.
    first = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT seq FROM audit_events WHERE "  # noqa: S608 (constants)
                + " OR ".join(
                    f"typeof({c}) != 'text' OR length({c}) != 64 OR {c} GLOB '*[^0-9a-f]*'"
                    for c in COLUMNS
                )
                + " ORDER BY seq LIMIT 1"
            )
        )
        .scalar_one_or_none()
    )
    if first is not None:
        raise _refuse(first)
    _sqlite_drop_triggers()
    _sqlite_rewrite(_to_bytes)  # the columns are text-typed, but SQLite keeps the blobs
    with op.batch_alter_table("audit_events", recreate="always") as batch:
        batch.drop_constraint("uq_audit_events_hash", type_="unique")
        for column in COLUMNS:
            batch.alter_column(
                column, existing_type=sa.String(64), type_=sa.LargeBinary(32), nullable=False
            )
            batch.create_check_constraint(
                op.f(f"ck_audit_events_{column}_bytes"),
                f"typeof({column}) = 'blob' AND length({column}) = 32",
            )
    _sqlite_triggers("seq = NEW.seq")


def _sqlite_downgrade() -> None:
    _sqlite_drop_triggers()
    with op.batch_alter_table("audit_events", recreate="always") as batch:
        for column in COLUMNS:
            batch.drop_constraint(op.f(f"ck_audit_events_{column}_bytes"), type_="check")
    _sqlite_rewrite(_to_hex)
    with op.batch_alter_table("audit_events", recreate="always") as batch:
        for column in COLUMNS:
            batch.alter_column(
                column, existing_type=sa.LargeBinary(32), type_=sa.String(64), nullable=False
            )
        batch.create_unique_constraint("uq_audit_events_hash", ["hash"])
    _sqlite_triggers("seq = NEW.seq OR hash = NEW.hash")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _postgresql_upgrade()
    else:
        _sqlite_upgrade()


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _postgresql_downgrade()
    else:
        _sqlite_downgrade()
