"""app.compact: the stored form of JSON columns and outbox bodies."""

from __future__ import annotations

import hashlib
import json

import orjson
import pytest
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
