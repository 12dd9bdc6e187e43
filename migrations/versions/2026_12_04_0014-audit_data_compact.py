"""audit data compact: ``audit_events.data`` stored compressed with dictionary 2

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04 18:00:00

``audit_events.data`` held each event's data as ``jsonb`` (PostgreSQL) or JSON text
(SQLite); it now holds app.compact's bytes (``bytea`` / a blob): codec id 0x02, then a
Zstandard frame compressed with dictionary 2 (``app/dictionaries/2.zdict``, trained on
audit event data). On SQLite a CHECK holds every row to the blob type. Nothing that is
hashed, signed or shown changes: an event's hash is computed over the canonical JSON of the
document read back, which is the document that was stored (docs/audit.md, "Stored form").

Every row is converted, in seq order, a chunk at a time: each value is read as text (on
PostgreSQL ``data::text``), parsed and written compactly as app.compact writes it, its
members in the order they were stored (``jsonb``'s on PostgreSQL, which the service keeps
for new rows there too), so every reader shows what it showed before. A stored text that
does not parse (possible only on SQLite, and only if someone wrote it there) is kept as it
stands, compressed: it reads back as the same text, and the walk reports its event
(``data_unreadable``). On PostgreSQL the compressed values go to a temporary table first
and the column changes type in one rewrite of the table (``ALTER … TYPE … USING``), which
fires no row trigger and leaves no dead rows; writers wait for the whole migration (the
table is locked in SHARE mode first). On SQLite the append-only triggers are dropped for
the rewrite and made again, as in 0013. Timings: docs/operations.md, "Upgrades".

Both ways: the downgrade writes the JSON back (``jsonb`` / text). It refuses to run if a
stored value does not decompress (tampered): there is no JSON to write for it, and writing
some would hide the tampering. Run ``ruta audit verify`` and look at the event first. The
codec is written out here rather than imported, so this revision keeps working however app
code changes; dictionary 2 never changes (app/compact.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
import zstandard
from alembic import op
from sqlalchemy.dialects import postgresql

import app

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_RAW, _CODEC = 0x00, 0x02
_CHUNK = 5000
_TEMPORARY = "ruta_0014_data"


class Unreadable(RuntimeError):
    """A stored value that does not decompress: the downgrade has no JSON to write for it."""


def _dictionary() -> zstandard.ZstdCompressionDict:
    path = Path(app.__file__).parent / "dictionaries" / "2.zdict"
    return zstandard.ZstdCompressionDict(path.read_bytes(), dict_type=zstandard.DICT_TYPE_AUTO)


def _packer() -> Callable[[str], bytes]:
    compressor = zstandard.ZstdCompressor(
        level=9, dict_data=_dictionary(), write_checksum=False, write_dict_id=False
    )

    def pack(stored: str) -> bytes:
        raw = stored.encode("utf-8", "surrogatepass")
        # app.compact.pack_json's form (app.db.json_dumps'), parsed by orjson as the service
        # parses it; a text that does not parse is kept as it stands (it reads back as the
        # same text, and its event fails verification).
        with contextlib.suppress(orjson.JSONDecodeError, orjson.JSONEncodeError):
            raw = orjson.dumps(orjson.loads(raw), option=orjson.OPT_NON_STR_KEYS)
        return bytes([_CODEC]) + compressor.compress(raw)

    return pack


def _unpacker() -> Callable[[Any, Any], str]:
    decompressor = zstandard.ZstdDecompressor(dict_data=_dictionary())

    def unpack(seq: Any, blob: Any) -> str:
        stored = bytes(blob) if isinstance(blob, bytes | bytearray | memoryview) else b""
        try:
            if stored[:1] == bytes([_RAW]):
                return stored[1:].decode()
            if stored[:1] == bytes([_CODEC]):
                return decompressor.decompress(stored[1:]).decode()
        except (zstandard.ZstdError, UnicodeDecodeError):
            pass
        raise Unreadable(
            f"audit event {seq}'s stored data does not decompress; there is no JSON to write "
            "back for it. Run `ruta audit verify` and look at it before downgrading."
        )

    return unpack


def _chunks(column: str) -> Any:
    """``(seq, column)`` of every event, in seq order, a chunk at a time."""
    bind = op.get_bind()
    last = 0
    while True:
        rows = bind.execute(
            sa.text(
                f"SELECT seq, {column} FROM audit_events WHERE seq > :last "  # noqa: S608
                "ORDER BY seq LIMIT :n"
            ),
            {"last": last, "n": _CHUNK},
        ).all()
        if not rows:
            return
        last = rows[-1][0]
        yield rows


def _postgresql_convert(column: str, new_type: str, change: Callable[[Any, Any], Any]) -> None:
    """``data`` becomes ``new_type`` holding ``change(seq, column's value)``: computed here into
    a temporary table, then one ``ALTER … TYPE … USING`` that looks each row's value up."""
    bind = op.get_bind()
    op.execute("LOCK TABLE audit_events IN SHARE MODE")  # no event is added meanwhile
    kind = "bytea" if new_type == "bytea" else "text"
    op.execute(f"CREATE TEMPORARY TABLE {_TEMPORARY} (seq bigint PRIMARY KEY, value {kind})")
    insert = sa.text(
        f"INSERT INTO {_TEMPORARY} (seq, value) SELECT * FROM unnest(:seqs, :values)"  # noqa: S608
    ).bindparams(
        sa.bindparam("seqs", type_=postgresql.ARRAY(sa.BigInteger())),
        sa.bindparam(
            "values",
            type_=postgresql.ARRAY(sa.LargeBinary() if kind == "bytea" else sa.Text()),
        ),
    )
    for rows in _chunks(column):
        bind.execute(
            insert,
            {"seqs": [row[0] for row in rows], "values": [change(row[0], row[1]) for row in rows]},
        )
    op.execute(
        f"CREATE FUNCTION pg_temp.ruta_0014_value(bigint) RETURNS {kind} "  # noqa: S608
        f"LANGUAGE sql STABLE AS $$ SELECT value FROM {_TEMPORARY} WHERE seq = $1 $$"
    )
    cast = "" if new_type == "bytea" else "::jsonb"
    op.execute(
        f"ALTER TABLE audit_events ALTER COLUMN data TYPE {new_type} "
        f"USING pg_temp.ruta_0014_value(seq){cast}"
    )
    op.execute("DROP FUNCTION pg_temp.ruta_0014_value(bigint)")
    op.execute(f"DROP TABLE {_TEMPORARY}")


def _sqlite_triggers() -> None:
    """The append-only triggers, as 0013 made them."""
    for verb in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER audit_events_no_{verb.lower()} BEFORE {verb} ON audit_events "
            f"BEGIN SELECT RAISE(ABORT, 'ruta audit: {verb} on audit_events is refused; "
            "the audit trail is append-only'); END"
        )
    op.execute(
        "CREATE TRIGGER audit_events_no_replace BEFORE INSERT ON audit_events "
        "WHEN EXISTS (SELECT 1 FROM audit_events WHERE seq = NEW.seq) "
        "BEGIN SELECT RAISE(ABORT, 'ruta audit: replacing a row of audit_events is refused; "
        "the audit trail is append-only'); END"
    )


def _sqlite_drop_triggers() -> None:
    for name in ("no_update", "no_delete", "no_replace"):
        op.execute(f"DROP TRIGGER IF EXISTS audit_events_{name}")


def _sqlite_rewrite(change: Callable[[Any, Any], Any]) -> None:
    """Every row's ``data`` replaced by ``change(seq, data)``. The triggers must be off."""
    bind = op.get_bind()
    update = sa.text("UPDATE audit_events SET data = :d WHERE seq = :s")
    for rows in _chunks("data"):
        bind.execute(update, [{"s": seq, "d": change(seq, value)} for seq, value in rows])


def _as_text(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "surrogateescape")
    return str(value)


def upgrade() -> None:
    pack = _packer()
    if op.get_bind().dialect.name == "postgresql":
        _postgresql_convert("data::text", "bytea", lambda _seq, value: pack(value))
        return
    _sqlite_drop_triggers()
    _sqlite_rewrite(lambda _seq, value: pack(_as_text(value)))
    with op.batch_alter_table("audit_events", recreate="always") as batch:
        batch.alter_column("data", existing_type=JSON, type_=sa.LargeBinary(), nullable=False)
        batch.create_check_constraint(op.f("ck_audit_events_data_bytes"), "typeof(data) = 'blob'")
    _sqlite_triggers()


def downgrade() -> None:
    unpack = _unpacker()
    if op.get_bind().dialect.name == "postgresql":
        _postgresql_convert("data", "jsonb", unpack)
        return
    # Every value is read before anything changes: a refusal leaves the table as it was.
    for rows in _chunks("data"):
        for seq, value in rows:
            unpack(seq, value)
    _sqlite_drop_triggers()
    with op.batch_alter_table("audit_events", recreate="always") as batch:
        batch.drop_constraint(op.f("ck_audit_events_data_bytes"), type_="check")
        batch.alter_column("data", existing_type=sa.LargeBinary(), type_=JSON, nullable=False)
    _sqlite_rewrite(unpack)
    _sqlite_triggers()
