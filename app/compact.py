"""Compact storage of JSON documents and outbound bodies.

Most of what Ruta stores per screening is JSON that repeats itself from row to row: the
rules trace carries every fired rule's texts in two languages and its guideline, each
referral's reasons carry the same texts, and its match lists every partner passed over. It
is stored here as a one-byte codec id followed by the compressed bytes:

* ``0x00``: the JSON text (UTF-8) as is;
* ``0x01``: a Zstandard frame compressed with dictionary 1 (``app/dictionaries/1.zdict``),
  trained on the screening's JSON columns and the partners' bodies;
* ``0x02``: a Zstandard frame compressed with dictionary 2 (``app/dictionaries/2.zdict``,
  16 KiB), trained on the audit trail's event data (``audit_events.data``, migration 0014)
  with its members in both orders it is stored in (as written; ``jsonb``'s): its keys,
  codes, the rule set's version and hash. On events written by the real write path it
  stores about 60 bytes an event where dictionary 1 stores 93 and ``jsonb`` 282
  (docs/performance.md, "Audit data compressed").

Columns (:class:`CompactJSON`) are written with whichever of the two is shorter
(:func:`pack_smallest`): a frame costs about ten bytes of its own, so a short list such as
a referral's flags or ``[]`` is smaller as it is (revision 0016; docs/performance.md,
"Referral and outbox rows"). Readers read either codec, whatever the writer chose.

Why Zstandard with a trained dictionary rather than zlib: on the benchmark's rows (docs/
performance.md, "Storage per screening") a 5 KB trace becomes 250-500 bytes; plain zlib
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
byte (app.delivery.outbox). The audit trail's ``data`` is stored through this module, but
what is hashed is the canonical JSON of the document read back (app.audit.chain), which is
the document written; a stored value that no codec reads is returned as :class:`Unreadable`
there, which readers show and the verifier refuses (docs/audit.md, "Stored form").
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
ZSTD_DICT_2 = 0x02
#: The codec new values are written with (the audit trail's data: :data:`AUDIT`).
CURRENT = ZSTD_DICT_1
AUDIT = ZSTD_DICT_2
_DICTIONARIES = {ZSTD_DICT_1: "1.zdict", ZSTD_DICT_2: "2.zdict"}
#: Zstandard's default level. Level 9 stored these columns about 20% smaller (1.78 KB a
#: screening against 2.19 KB, 2,000 generated screenings) but took about four times the CPU
#: (238 µs a screening against 57 µs in a tight loop, twice that in the app), and intake runs
#: on the same cores as the emergency it must hand on (docs/performance.md, "Where the
#: emergency's time went"). Any level reads back with the same dictionary: rows written at
#: level 9 stay as they are.
_LEVEL = 3
#: No stored value is near this; a frame that says it is larger is refused before any
#: memory is set aside for it.
MAX_SIZE = 16 * 1024 * 1024


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


def pack_smallest(data: bytes, codec: int = CURRENT) -> bytes:
    """``data`` behind the codec that stores it in fewer bytes: ``codec``'s dictionary, or
    RAW when the frame's own overhead outweighs what it saves (ties go to RAW, which costs
    nothing to read)."""
    compressed = pack(data, codec)
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
        # One frame, whole, that states its size (as every frame written here does), and
        # nothing after it: a value with bytes added or cut is not one that was written
        # (Zstandard itself would read the first frame and ignore the rest).
        size = zstandard.frame_content_size(rest)
        if not 0 <= size <= MAX_SIZE:
            raise CompactError("corrupt value: no size, or one beyond any stored value")
        if _frame_length(rest) != len(rest):
            raise CompactError("corrupt value: not exactly one whole frame")
        out: bytes = _decompressor(codec).decompress(rest)
    except zstandard.ZstdError as exc:
        raise CompactError(f"corrupt value: {exc}") from None
    if len(out) != size:
        raise CompactError("corrupt value: not the size it states")
    return out


def _frame_length(frame: bytes) -> int:
    """The length of the Zstandard frame ``frame`` starts with, from its block headers
    (RFC 8878, 3.1.1), or -1 if it is cut short. Cheaper than a streaming decompressor."""
    at, end = zstandard.frame_header_size(frame), len(frame)
    while at + 3 <= end:
        header = frame[at] | frame[at + 1] << 8 | frame[at + 2] << 16
        # An RLE block (type 1) holds one byte whatever its size; the others their size.
        at += 3 + (1 if (header >> 1) & 3 == 1 else header >> 3)
        if header & 1:  # the last block; then the checksum, if the descriptor says so
            return at + (4 if frame[4] & 4 else 0)
    return -1


def _json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


def pack_json(value: Any, codec: int = CURRENT) -> bytes:
    """A JSON document, compactly: keys in the order given, no spaces, non-ASCII as is,
    written by orjson as every other JSON column is (app.db.json_dumps)."""
    return pack(_json(value), codec)


def pack_json_smallest(value: Any, codec: int = CURRENT) -> bytes:
    """:func:`pack_json` with ``codec`` or RAW, whichever stores ``value`` in fewer bytes."""
    return pack_smallest(_json(value), codec)


def unpack_json(blob: bytes) -> Any:
    return orjson.loads(unpack(blob))


class Unreadable(dict[str, Any]):
    """What a stored value reads as when no codec reads it, or it is not JSON: a document
    ``{"unreadable": <why>}`` that readers can show, and a type the audit verifier refuses
    (reason ``data_unreadable``) before it hashes anything."""

    __slots__ = ("detail",)

    def __init__(self, detail: str) -> None:
        super().__init__(unreadable=detail)
        self.detail = detail


def read_json(blob: Any) -> Any:
    """:func:`unpack_json`, with what it cannot read as :class:`Unreadable` (never an
    exception): bytes that are not a value of a known codec, or not JSON, or not bytes."""
    if type(blob) is not bytes:
        if not isinstance(blob, bytes | bytearray | memoryview):
            return Unreadable(f"stored as {type(blob).__name__}, not bytes")
        blob = bytes(blob)
    try:
        return orjson.loads(unpack(blob))
    except CompactError as exc:
        return Unreadable(str(exc))
    except orjson.JSONDecodeError:
        return Unreadable("not JSON once decompressed")


def is_packed_body(plaintext: bytes) -> bool:
    """Whether a decrypted outbox body was packed (bodies stored before revision 0010 are
    the JSON itself, which starts with ``{`` or whitespace, never with a codec id)."""
    return bool(plaintext) and plaintext[0] in (RAW, *_DICTIONARIES)


def body_bytes(plaintext: bytes) -> bytes:
    """The exact bytes a partner receives, from a decrypted outbox body (either form)."""
    return unpack(plaintext) if is_packed_body(plaintext) else plaintext


def _jsonb_key(key: str) -> tuple[int, bytes]:
    raw = key.encode("utf-8", "surrogatepass")
    return len(raw), raw


def jsonb_order(value: Any) -> Any:
    """``value`` with every object's members in the order PostgreSQL's ``jsonb`` keeps them
    (shorter keys first, then by their UTF-8 bytes), which is how such a column returned
    them."""
    if type(value) is dict:
        if not all(type(key) is str for key in value):
            # Other keys are written as text (:func:`pack_json`): ordered as that text.
            value = orjson.loads(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS))
        return {key: jsonb_order(value[key]) for key in sorted(value, key=_jsonb_key)}
    if type(value) is list:
        return [jsonb_order(item) for item in value]
    return value


class CompactJSON(TypeDecorator[Any]):
    """A JSON column stored as :func:`pack_json_smallest` bytes (``bytea`` / ``BLOB``),
    written with ``codec`` or RAW, whichever is shorter. Only whole values are read and
    written; no query looks inside these columns. Python's None is stored as JSON ``null``,
    as SQLAlchemy's JSON type stores it. With ``lenient``, a value no codec reads comes back
    as :class:`Unreadable` instead of raising :class:`CompactError` (the audit trail:
    evidence of tampering is shown, not hidden)."""

    impl = LargeBinary
    cache_ok = True

    def __init__(self, codec: int = CURRENT, *, lenient: bool = False, jsonb: bool = False) -> None:
        super().__init__()
        self.codec = codec
        self.lenient = lenient
        #: On PostgreSQL, objects' members in ``jsonb``'s order (:func:`jsonb_order`), so a
        #: column that was ``jsonb`` reads back as it did, new rows and converted ones alike.
        self.jsonb = jsonb

    def process_bind_param(self, value: Any, dialect: Dialect) -> bytes:
        if self.jsonb and dialect.name == "postgresql":
            value = jsonb_order(value)
        return pack_json_smallest(value, self.codec)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        return read_json(value) if self.lenient else unpack_json(bytes(value))


class Digest(TypeDecorator[str]):
    """A SHA-256 digest: a hex string in Python, its 32 bytes in the database."""

    impl = LargeBinary(32)
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> bytes | None:
        return None if value is None else bytes.fromhex(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else bytes(value).hex()
