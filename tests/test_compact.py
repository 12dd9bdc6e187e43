"""app.compact: the stored form of JSON columns and outbox bodies."""

from __future__ import annotations

import hashlib
import json

import orjson
import pytest
import zstandard
from hypothesis import given, settings
from sqlalchemy.dialects import postgresql, sqlite

from app import compact
from app.schemas.examples import EXAMPLE_SCREENING
from tests.strategies import json_values


@given(json_values())
@settings(max_examples=200)
def test_any_json_value_reads_back_equal(value: object) -> None:
    blob = compact.pack_json(value)
    assert blob[0] == compact.CURRENT
    assert compact.unpack_json(blob) == value


def test_key_order_and_unicode_survive() -> None:
    value = {"z": 1, "a": {"é": "Habla una lengua originaria", "b": [3, 1.5, None]}}
    back = compact.unpack_json(compact.pack_json(value))
    assert back == value
    assert json.dumps(back) == json.dumps(value)  # same order, key for key


def test_the_dictionary_makes_repetitive_documents_small() -> None:
    text = json.dumps(EXAMPLE_SCREENING, ensure_ascii=False, separators=(",", ":")).encode()
    packed = compact.pack_json(EXAMPLE_SCREENING)
    assert compact.unpack(packed) == text
    assert len(packed) < len(text) / 4


def test_raw_codec_and_errors() -> None:
    assert compact.unpack(compact.pack(b'{"a":1}', compact.RAW)) == b'{"a":1}'
    with pytest.raises(compact.CompactError, match="unknown codec"):
        compact.unpack(b"\x7fabc")
    with pytest.raises(compact.CompactError, match="empty"):
        compact.unpack(b"")
    with pytest.raises(compact.CompactError, match="corrupt"):
        compact.unpack(b"\x01not zstd")


def test_a_value_is_exactly_one_whole_frame_of_a_stated_size() -> None:
    """Bytes added to or cut from a stored value are not a value that was written, even
    where Zstandard itself would read the frame and ignore the rest."""
    packed = compact.pack_json({"rules_fired": ["minor"]}, compact.AUDIT)
    assert compact.unpack_json(packed) == {"rules_fired": ["minor"]}
    for damaged in (packed + b"\x00", packed + packed[1:], packed[:-1]):
        with pytest.raises(compact.CompactError, match="corrupt"):
            compact.unpack(damaged)
    unsized = zstandard.ZstdCompressor(write_content_size=False).compress(b"{}")
    huge = zstandard.ZstdCompressor().compress(b" " * (compact.MAX_SIZE + 1))
    for frame in (unsized, huge):
        with pytest.raises(compact.CompactError, match="no size, or one beyond"):
            compact.unpack(b"\x01" + frame)


def test_read_json_says_why_instead_of_raising() -> None:
    packed = compact.pack_json({"a": "ñ"}, compact.AUDIT)
    assert compact.read_json(packed) == {"a": "ñ"}
    assert compact.read_json(bytearray(packed)) == {"a": "ñ"}
    cases = {
        b"": "empty value",
        b"\x09" + packed[1:]: "unknown codec 0x09",
        packed[:-2]: "corrupt value",
        compact.pack(b"{", compact.RAW): "not JSON",
        "{}": "stored as str, not bytes",
    }
    for stored, why in cases.items():
        value = compact.read_json(stored)
        assert type(value) is compact.Unreadable
        assert value.detail.startswith(why)
        assert value == {"unreadable": value.detail}


def test_the_audit_dictionary_beats_the_first_on_audit_data() -> None:
    """Dictionary 2 was trained on events the real write path recorded; on one of that
    shape (ids and digests of its own) it stores far less than dictionary 1."""
    data = {
        "delivery_id": "b011b8a3-1164-4cff-b51f-277c7a38b43e",
        "payload_hash": "48f5cfab338f76aad3c6e06de41774ce6d06a724a99ab718eb9e78314b0aff64",
        "fields_shared": ["demographics", "exploitation", "location", "safe_contact"],
        "legal_basis": "vital_interest",
        "service": "protection",
        "attempt": 1,
        "http_status": 200,
    }
    first, audit = compact.pack_json(data), compact.pack_json(data, compact.AUDIT)
    assert (first[0], audit[0]) == (compact.ZSTD_DICT_1, compact.ZSTD_DICT_2)
    assert compact.unpack_json(audit) == data
    assert len(audit) < 0.75 * len(first)


def test_the_audit_column_keeps_jsonb_order_on_postgresql() -> None:
    """As the jsonb column returned the members (shorter keys first, then by bytes), so the
    API shows an event's data as it did before 0014; SQLite keeps the order written."""
    kind = compact.CompactJSON(compact.AUDIT, jsonb=True)
    data = {
        "services": ["legal"],
        "decision_id": "x",
        "ok": True,
        "é": {"bb": 1, "a": [{"z": 0, "y": 1}]},
    }
    dialects = (postgresql.dialect(), sqlite.dialect())  # type: ignore[no-untyped-call]
    on_postgresql, on_sqlite = (kind.process_bind_param(data, d) for d in dialects)
    assert list(compact.unpack_json(on_postgresql)) == ["ok", "é", "services", "decision_id"]
    assert compact.unpack_json(on_postgresql)["é"] == {"a": [{"y": 1, "z": 0}], "bb": 1}
    assert orjson.dumps(compact.unpack_json(on_sqlite)) == orjson.dumps(data)


def test_bodies_before_0010_are_read_as_they_are() -> None:
    body = b'{"type":"referral.created","data":{"x":"\xc3\xa9"}}'
    assert compact.body_bytes(body) == body  # stored before 0010: the JSON itself
    assert compact.body_bytes(compact.pack(body)) == body
    assert compact.body_bytes(b" \n{}") == b" \n{}"


def test_column_types_bind_and_read_back() -> None:
    kind = compact.CompactJSON()
    dialects = (postgresql.dialect(), sqlite.dialect())  # type: ignore[no-untyped-call]
    for dialect in dialects:
        stored = kind.process_bind_param({"a": [1]}, dialect)
        assert isinstance(stored, bytes)
        assert kind.process_result_value(stored, dialect) == {"a": [1]}
        assert kind.process_result_value(kind.process_bind_param(None, dialect), dialect) is None
        digest = hashlib.sha256(b"x").hexdigest()
        raw = compact.Digest().process_bind_param(digest, dialect)
        assert raw == hashlib.sha256(b"x").digest()
        assert compact.Digest().process_result_value(memoryview(raw), dialect) == digest


@given(json_values())
@settings(max_examples=200)
def test_the_column_writer_stores_the_shorter_form_and_reads_it_back(value: object) -> None:
    text = orjson.dumps(value)  # what the writer writes (app.db.json_dumps too)
    blob = compact.pack_json_smallest(value)
    assert compact.unpack_json(blob) == value
    assert len(blob) == min(len(compact.pack_json(value)), len(text) + 1)
    assert len(blob) <= len(compact.pack_json(value))


@pytest.mark.parametrize(
    ("value", "codec"),
    [
        ([], compact.RAW),  # a frame alone is longer than "[]"
        (["hospital-a"], compact.RAW),
        (["interpreter_needed", "no_police_report_required", "phone_controlled"], 0x01),
        (["clinical", "demographics", "location", "needs", "safe_contact"], 0x01),
    ],
)
def test_short_lists_are_stored_as_they_are_longer_ones_compressed(
    value: list[str], codec: int
) -> None:
    blob = compact.CompactJSON().process_bind_param(value, sqlite.dialect())
    assert blob[0] == codec
    assert compact.CompactJSON().process_result_value(blob, sqlite.dialect()) == value
    # Whichever the writer chose, a value in the other codec reads back the same.
    for other in (compact.RAW, compact.CURRENT):
        assert compact.unpack_json(compact.pack_json(value, other)) == value
