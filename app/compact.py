"""Compact storage of JSON documents and outbound bodies.

Most of what Ruta stores per screening is JSON that repeats itself from row to row: the
rules trace carries every fired rule's texts in two languages and its guideline, each
referral's reasons carry the same texts, and its match lists every partner passed over. It
is stored here as a one-byte codec id followed by the compressed bytes:

* ``0x00``: the JSON text (UTF-8) as is;
* ``0x01``: a Zstandard frame compressed with dictionary 1 (``app/dictionaries/1.zdict``).

Columns (:class:`CompactJSON`) are written with whichever of the two is shorter
(:func:`pack_smallest`): a frame costs about ten bytes of its own, so a short list such as
a referral's flags or ``[]`` is smaller as it is (revision 0016; docs/performance.md,
"Referral and outbox rows"). Readers read either codec, whatever the writer chose.

Why Zstandard with a trained dictionary rather than zlib: on the benchmark's rows (docs/
performance.md, "Storage per screening") a 5 KB trace becomes about 250 bytes; plain zlib
gets 1.7 KB, because each row alone is too short to learn its own repetitions. A zlib preset
dictionary comes close (about 10% larger) but is capped at 32 KB and compresses slower;
``zstandard`` is the maintained binding of the reference library. The dictionary holds the
rule set's texts, guideline names, partner ids and the JSON keys, so a row stores mostly
what is particular to it.

A dictionary, once used, must never change: rows written with it name it by its codec id.
A better dictionary gets a new id and file; reading keeps every old one. Values read back
are the very documents written (JSON text in, the same JSON out), so every reader - API,
console, reports, replay - sees what it saw before. Nothing here touches what is hashed or
signed: bodies are compressed before they are encrypted and sent decompressed, byte for
byte (app.delivery.outbox), and the audit trail is not stored through this module.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import orjson
import zstandard
from sqlalchemy import LargeBinary, TypeDecorator
from sqlalchemy.engine import Dialect

RAW = 0x00
ZSTD_DICT_1 = 0x01
#: The codec new values are written with.
CURRENT = ZSTD_DICT_1
_DICTIONARIES = {ZSTD_DICT_1: "1.zdict"}
_LEVEL = 9


class CompactError(ValueError):
    """Stored bytes that no known codec reads."""


@cache
def _dictionary(codec: int) -> zstandard.ZstdCompressionDict:
    path = Path(__file__).parent / "dictionaries" / _DICTIONARIES[codec]
    return zstandard.ZstdCompressionDict(path.read_bytes(), dict_type=zstandard.DICT_TYPE_AUTO)


@cache
def _compressor(codec: int) -> zstandard.ZstdCompressor:
    return zstandard.ZstdCompressor(
        level=_LEVEL, dict_data=_dictionary(codec), write_checksum=False, write_dict_id=False
    )


@cache
def _decompressor(codec: int) -> zstandard.ZstdDecompressor:
    return zstandard.ZstdDecompressor(dict_data=_dictionary(codec))


def pack(data: bytes, codec: int = CURRENT) -> bytes:
    """``data`` compressed, behind its codec id."""
    if codec == RAW:
        return bytes([RAW]) + data
    return bytes([codec]) + _compressor(codec).compress(data)


def pack_smallest(data: bytes) -> bytes:
    """``data`` behind the codec that stores it in fewer bytes: the current dictionary's,
    or RAW when the frame's own overhead outweighs what it saves (ties go to RAW, which
    costs nothing to read)."""
    compressed = pack(data)
    return compressed if len(compressed) < len(data) + 1 else bytes([RAW]) + data


def unpack(blob: bytes) -> bytes:
    """The bytes :func:`pack` was given."""
    if not blob:
        raise CompactError("empty value")
    codec, rest = blob[0], blob[1:]
    if codec == RAW:
        return bytes(rest)
    if codec not in _DICTIONARIES:
        raise CompactError(f"unknown codec {codec:#04x}")
    try:
        return _decompressor(codec).decompress(rest)
    except zstandard.ZstdError as exc:
        raise CompactError(f"corrupt value: {exc}") from None


def _json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


def pack_json(value: Any, codec: int = CURRENT) -> bytes:
    """A JSON document, compactly: keys in the order given, no spaces, non-ASCII as is,
    written by orjson as every other JSON column is (app.db.json_dumps)."""
    return pack(_json(value), codec)


def pack_json_smallest(value: Any) -> bytes:
    """:func:`pack_json` with the codec that stores ``value`` in fewer bytes."""
    return pack_smallest(_json(value))


def unpack_json(blob: bytes) -> Any:
    return orjson.loads(unpack(blob))


def is_packed_body(plaintext: bytes) -> bool:
    """Whether a decrypted outbox body was packed (bodies stored before revision 0010 are
    the JSON itself, which starts with ``{`` or whitespace, never with a codec id)."""
    return bool(plaintext) and plaintext[0] in (RAW, *_DICTIONARIES)


def body_bytes(plaintext: bytes) -> bytes:
    """The exact bytes a partner receives, from a decrypted outbox body (either form)."""
    return unpack(plaintext) if is_packed_body(plaintext) else plaintext


class CompactJSON(TypeDecorator[Any]):
    """A JSON column stored as :func:`pack_json_smallest` bytes (``bytea`` / ``BLOB``).
    Only whole values are read and written; no query looks inside these columns. Python's
    None is stored as JSON ``null``, as SQLAlchemy's JSON type stores it."""

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> bytes:
        return pack_json_smallest(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else unpack_json(bytes(value))


class Digest(TypeDecorator[str]):
    """A SHA-256 digest: a hex string in Python, its 32 bytes in the database."""

    impl = LargeBinary(32)
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> bytes | None:
        return None if value is None else bytes.fromhex(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else bytes(value).hex()
