"""referral and outbox compact: short JSON lists packed, webhook ids derived

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04 18:00:00.000000

- ``referrals.flags``, ``referrals.data_categories`` and ``referrals.tried_partner_ids``
  become bytes as app/compact.py stores JSON: a codec id, then the JSON text as is (0x00)
  or a Zstandard frame with dictionary 1 (0x01), whichever is shorter. Nothing queries
  inside them; read back, each is the list it was.
- ``deliveries.webhook_id`` may be NULL: rows written from now on store none, and their
  ``webhook-id`` is ``msg_`` and the delivery's id in 32 hex digits (app.models.Delivery).
  The ids stored so far stay as they are, so no message ever changes its id (partners
  deduplicate on it). Their unique constraint becomes a unique index on the stored ones
  only (``WHERE webhook_id IS NOT NULL``); the rest are unique as the primary key is.
- ``ix_referrals_partner_status`` is dropped: no query filters referrals on a partner and
  a status that another index does not serve (the inbox's partial indexes, the log's
  ``ix_referrals_partner_created``).

On PostgreSQL the three columns change type in one rewrite of ``referrals`` (its indexes are
rebuilt with it), each distinct value converted once; on SQLite the rows are converted in
chunks and the tables rebuilt. Downgrade converts every row back, writes each derived
webhook id into its row (the same id, so messages keep it) and restores the constraint and
the index. The codec is written out here rather than imported, so this revision keeps
working however app code changes; dictionary 1 never changes (app/compact.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import zstandard
from alembic import op
from sqlalchemy.dialects import postgresql

import app

revision: str = "0016"
down_revision: str | Sequence[str] | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
COLUMNS = ("flags", "data_categories", "tried_partner_ids")
_RAW = 0x00
_ZSTD_DICT_1 = 0x01
_CHUNK = 2000
_MAP = "ruta_0016_map"
_NOT_NULL = "webhook_id IS NOT NULL"


def _dictionary() -> zstandard.ZstdCompressionDict:
    path = Path(app.__file__).parent / "dictionaries" / "1.zdict"
    return zstandard.ZstdCompressionDict(path.read_bytes(), dict_type=zstandard.DICT_TYPE_AUTO)


def _packer() -> Callable[[Any], bytes]:
    """JSON as app.compact.pack_json_smallest writes it."""
    compressor = zstandard.ZstdCompressor(
        level=9, dict_data=_dictionary(), write_checksum=False, write_dict_id=False
    )

    def pack(value: Any) -> bytes:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        data = text.encode()
        frame = bytes([_ZSTD_DICT_1]) + compressor.compress(data)
        return frame if len(frame) < len(data) + 1 else bytes([_RAW]) + data

    return pack


def _unpacker() -> Callable[[bytes], Any]:
    decompressor = zstandard.ZstdDecompressor(dict_data=_dictionary())

    def unpack(blob: bytes) -> Any:
        blob = bytes(blob)
        if blob[0] == _RAW:
            return json.loads(blob[1:])
        if blob[0] != _ZSTD_DICT_1:
            raise ValueError(f"unknown codec {blob[0]:#04x}")
        return json.loads(decompressor.decompress(blob[1:]))

    return unpack


# -- PostgreSQL: one rewrite, each distinct value converted once ---------------------------


def _pg_retype(
    old: sa.types.TypeEngine[Any],
    new: sa.types.TypeEngine[Any],
    sql_types: tuple[str, str],
    change: Callable[[Any], Any],
) -> None:
    """The three columns from ``old`` to ``new`` (SQL names ``sql_types``) in one ALTER
    TABLE: their distinct values go into a temporary table with what each becomes, which a
    function looks up for every row as the table is rewritten."""
    bind = op.get_bind()
    referrals = sa.table("referrals", *(sa.column(c, old) for c in COLUMNS))
    distinct = sa.union(*(sa.select(referrals.c[c].label("v")) for c in COLUMNS))
    values = list(bind.execute(distinct).scalars())
    old_sql, new_sql = sql_types
    op.execute(f"CREATE TEMPORARY TABLE {_MAP} (old {old_sql} PRIMARY KEY, new {new_sql} NOT NULL)")
    mapping = sa.table(_MAP, sa.column("old", old), sa.column("new", new))
    for start in range(0, len(values), _CHUNK):
        chunk = values[start : start + _CHUNK]
        bind.execute(sa.insert(mapping), [{"old": v, "new": change(v)} for v in chunk])
    op.execute(f"ANALYZE {_MAP}")
    op.execute(
        f"CREATE FUNCTION pg_temp.ruta_0016(value {old_sql}) RETURNS {new_sql} "  # noqa: S608
        f"LANGUAGE sql STABLE STRICT AS $$ SELECT new FROM {_MAP} WHERE old = value $$"
    )
    op.execute(
        "ALTER TABLE referrals "
        + ", ".join(
            f"ALTER COLUMN {c} TYPE {new_sql} USING pg_temp.ruta_0016({c})" for c in COLUMNS
        )
    )
    op.execute(f"DROP FUNCTION pg_temp.ruta_0016({old_sql})")
    op.execute(f"DROP TABLE {_MAP}")


# -- SQLite: rows converted in place in chunks, then the table rebuilt ----------------------


def _sqlite_rewrite(old: sa.types.TypeEngine[Any], change: Callable[[Any], Any]) -> None:
    """Every row's three values replaced by ``change(value)``, in rowid chunks (SQLite keeps
    what is written whatever the column's declared type; the rebuild then retypes it)."""
    bind = op.get_bind()
    source = sa.table(
        "referrals", sa.column("rowid", sa.Integer), *(sa.column(c, old) for c in COLUMNS)
    )
    last = 0
    while True:
        rows = bind.execute(
            sa.select(source).where(source.c.rowid > last).order_by(source.c.rowid).limit(_CHUNK)
        ).all()
        if not rows:
            return
        last = rows[-1][0]
        bind.execute(
            sa.text(
                "UPDATE referrals SET "  # noqa: S608 (constants)
                + ", ".join(f"{c} = :{c}" for c in COLUMNS)
                + " WHERE rowid = :r"
            ),
            [
                {"r": row[0], **{c: change(row[i + 1]) for i, c in enumerate(COLUMNS)}}
                for row in rows
            ],
        )


def upgrade() -> None:
    pack = _packer()
    op.drop_index("ix_referrals_partner_status", table_name="referrals")
    if op.get_bind().dialect.name == "postgresql":
        _pg_retype(JSON, sa.LargeBinary(), ("jsonb", "bytea"), pack)
        op.alter_column("deliveries", "webhook_id", existing_type=sa.String(64), nullable=True)
        op.drop_constraint("uq_deliveries_webhook_id", "deliveries", type_="unique")
    else:
        _sqlite_rewrite(JSON, pack)
        with op.batch_alter_table("referrals", recreate="always") as batch:
            for column in COLUMNS:
                batch.alter_column(
                    column, existing_type=JSON, type_=sa.LargeBinary(), existing_nullable=False
                )
        with op.batch_alter_table("deliveries", recreate="always") as batch:
            batch.drop_constraint("uq_deliveries_webhook_id", type_="unique")
            batch.alter_column("webhook_id", existing_type=sa.String(64), nullable=True)
    op.create_index(
        "uq_deliveries_webhook_id",
        "deliveries",
        ["webhook_id"],
        unique=True,
        postgresql_where=sa.text(_NOT_NULL),
        sqlite_where=sa.text(_NOT_NULL),
    )


def downgrade() -> None:
    unpack = _unpacker()
    postgres = op.get_bind().dialect.name == "postgresql"
    op.drop_index("uq_deliveries_webhook_id", table_name="deliveries")
    # The id each of these rows was sent with (app.models.Delivery.webhook_id), kept.
    hex_id = "replace(CAST(id AS text), '-', '')" if postgres else "lower(id)"
    op.execute(
        f"UPDATE deliveries SET webhook_id = 'msg_' || {hex_id} "  # noqa: S608 (constants)
        "WHERE webhook_id IS NULL"
    )
    if postgres:
        op.alter_column("deliveries", "webhook_id", existing_type=sa.String(64), nullable=False)
        op.create_unique_constraint("uq_deliveries_webhook_id", "deliveries", ["webhook_id"])
        _pg_retype(sa.LargeBinary(), JSON, ("bytea", "jsonb"), unpack)
    else:
        with op.batch_alter_table("deliveries", recreate="always") as batch:
            batch.alter_column("webhook_id", existing_type=sa.String(64), nullable=False)
            batch.create_unique_constraint("uq_deliveries_webhook_id", ["webhook_id"])
        _sqlite_rewrite(sa.LargeBinary(), lambda v: json.dumps(unpack(v), ensure_ascii=False))
        with op.batch_alter_table("referrals", recreate="always") as batch:
            for column in COLUMNS:
                batch.alter_column(
                    column, existing_type=sa.LargeBinary(), type_=JSON, existing_nullable=False
                )
    op.create_index("ix_referrals_partner_status", "referrals", ["partner_id", "status"])
