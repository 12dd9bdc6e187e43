"""compact storage: JSON columns compressed, digests as bytes

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 10:00:00.000000

- ``decisions.trace``, ``referrals.reasons``, ``referrals.match`` and ``screenings.data``
  become bytes: codec id 0x01 then a Zstandard frame compressed with dictionary 1
  (app/compact.py, app/dictionaries/1.zdict). Every row is converted; read back, each is the
  document it was (docs/performance.md, "Storage per screening").
- ``deliveries.body_sha256`` becomes the digest's 32 bytes instead of 64 hex characters.
- ``ix_screenings_organisation_received_at`` is dropped: no query filters screenings on
  those columns.
- Outbox bodies (``deliveries.body_ct``) are encrypted, and the migration holds no key: the
  rows written before stay as they are (the reader tells both forms apart, app.compact) and
  new rows are compressed before encryption. Nothing of the audit trail changes.

Downgrade converts every row back (JSON, hex). It is data-preserving except that bodies
written compressed after the upgrade stay compressed inside their ciphertext, which code
before 0010 would send as is: drain the outbox (no pending deliveries) before downgrading.
The codec is written out here rather than imported, so this revision keeps working however
app code changes; dictionary 1 never changes (app/compact.py).
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

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_CODEC = 0x01
_CHUNK = 500
#: (table, primary key, column)
_JSON_COLUMNS = (
    ("decisions", "id", "trace"),
    ("referrals", "id", "reasons"),
    ("referrals", "id", "match"),
    ("screenings", "id", "data"),
)


def _dictionary() -> zstandard.ZstdCompressionDict:
    path = Path(app.__file__).parent / "dictionaries" / "1.zdict"
    return zstandard.ZstdCompressionDict(path.read_bytes(), dict_type=zstandard.DICT_TYPE_AUTO)


def _packer() -> Callable[[Any], bytes]:
    compressor = zstandard.ZstdCompressor(
        level=9, dict_data=_dictionary(), write_checksum=False, write_dict_id=False
    )

    def pack(value: Any) -> bytes:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return bytes([_CODEC]) + compressor.compress(text.encode())

    return pack


def _unpacker() -> Callable[[bytes], Any]:
    decompressor = zstandard.ZstdDecompressor(dict_data=_dictionary())

    def unpack(blob: bytes) -> Any:
        blob = bytes(blob)
        if blob[0] == 0x00:
            return json.loads(blob[1:])
        if blob[0] != _CODEC:
            raise ValueError(f"unknown codec {blob[0]:#04x}")
        return json.loads(decompressor.decompress(blob[1:]))

    return unpack


def _convert(
    table: str,
    key: str,
    column: str,
    old_type: sa.types.TypeEngine[Any],
    new_type: sa.types.TypeEngine[Any],
    change: Callable[[Any], Any],
) -> None:
    """Replace ``column`` with one of ``new_type`` holding ``change(old value)`` (not null)."""
    temporary = f"{column}_0010"
    with op.batch_alter_table(table) as batch:
        batch.add_column(sa.Column(temporary, new_type, nullable=True))
    bind = op.get_bind()
    t = sa.table(
        table,
        sa.column(key, sa.Uuid()),
        sa.column(column, old_type),
        sa.column(temporary, new_type),
    )
    last = None
    while True:
        # In key order from where the last chunk ended: each chunk is an index range scan.
        query = sa.select(t.c[key], t.c[column]).order_by(t.c[key]).limit(_CHUNK)
        if last is not None:
            query = query.where(t.c[key] > last)
        rows = bind.execute(query).all()
        if not rows:
            break
        last = rows[-1][0]
        bind.execute(
            sa.update(t)
            .where(t.c[key] == sa.bindparam("k"))
            .values({temporary: sa.bindparam("v")}),
            [{"k": row[0], "v": change(row[1])} for row in rows],
        )
    with op.batch_alter_table(table) as batch:
        batch.drop_column(column)
        batch.alter_column(
            temporary, new_column_name=column, existing_type=new_type, nullable=False
        )


def upgrade() -> None:
    pack = _packer()
    for table, key, column in _JSON_COLUMNS:
        _convert(table, key, column, JSON, sa.LargeBinary(), pack)
    _convert("deliveries", "id", "body_sha256", sa.String(64), sa.LargeBinary(32), bytes.fromhex)
    with op.batch_alter_table("screenings") as batch:
        batch.drop_index("ix_screenings_organisation_received_at")


def downgrade() -> None:
    unpack = _unpacker()
    with op.batch_alter_table("screenings") as batch:
        batch.create_index(
            "ix_screenings_organisation_received_at", ["organisation", "received_at"], unique=False
        )
    _convert(
        "deliveries",
        "id",
        "body_sha256",
        sa.LargeBinary(32),
        sa.String(64),
        lambda v: bytes(v).hex(),
    )
    for table, key, column in reversed(_JSON_COLUMNS):
        _convert(table, key, column, sa.LargeBinary(), JSON, unpack)
