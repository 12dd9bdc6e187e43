"""The fast paths give the careful paths' answers.

* The offline checker hashes event lines written as the service writes them straight out of
  the file (app.audit.fast). Whatever is done to such a file, its verdict (ok, reason, first
  bad seq, the checkpoint that showed it) is the one the careful pass (every line parsed,
  every canonical form rebuilt) gives for the same bytes.
* The export builds each event's canonical body from its row without building a record
  (app.audit.store.canonical_row): the same bytes as the record's, or the same refusal.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.audit import fast, reader, store
from app.audit.chain import EventRecord
from app.audit.reader import read_export, verify_export, verify_export_file
from app.audit.verify import VerifyReport
from app.compact import AUDIT, pack_json
from tests.audit.test_mutations import EVENTS, SIGNER, START, signed_header

FULL = EVENTS[:595]


def _service_line(event: EventRecord) -> bytes:
    """An event line exactly as the export writes it (app.audit.export._event_lines)."""
    return b'{"type":"event","hash":"%s",%s' % (event.hash.encode(), event.canonical_body()[1:])


def _lines(events: list[EventRecord]) -> list[bytes]:
    lines = [orjson.dumps(signed_header(1, 595, 595))]
    lines += [_service_line(e) for e in events]
    final = SIGNER.sign(595, FULL[-1].hash, START)
    lines.append(orjson.dumps({**final.to_json(), "export": True}))
    return lines


def _verdict(report: VerifyReport) -> tuple[Any, ...]:
    return (
        report.ok,
        report.reason,
        report.first_bad_seq,
        report.checkpoint_seq,
        report.events_checked,
    )


def _both(tmp_path: Path, lines: list[bytes]) -> tuple[VerifyReport, VerifyReport]:
    """The file checked from disk, and the same bytes through the careful in-memory path."""
    path = tmp_path / "audit.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    from_file = verify_export_file(path, "ndjson", SIGNER.public_key)
    careful = verify_export(read_export(lines), SIGNER.public_key)
    return from_file, careful


def test_an_export_as_the_service_writes_it_is_intact(tmp_path: Path) -> None:
    from_file, careful = _both(tmp_path, _lines(FULL))
    assert from_file.ok, from_file
    assert _verdict(from_file) == _verdict(careful)
    assert from_file.events_checked == 595
    # ... and it was the fast pass that said so.
    path = tmp_path / "audit.ndjson"
    verifier = reader._start(reader._preamble(path, "ndjson"), SIGNER.public_key, [])
    with path.open("rb") as handle:
        proven = fast.walk(handle, verifier)
    assert proven is not None
    assert _verdict(proven) == _verdict(from_file)


def _rehash_from(events: list[EventRecord], at: int) -> None:
    prev = events[at - 1].prev_hash
    for event in events[at - 1 :]:
        event.prev_hash = prev
        event.hash = event.compute_hash()
        prev = event.hash


def _line_mutations(lines: list[bytes], index: int, kind: str) -> list[bytes]:
    """``index`` is an event's seq (its line's index, after the header)."""
    out = list(lines)
    line = out[index]
    if kind == "byte":  # one character of the body changed, hash left alone
        at = line.index(b'"occurred_at":"') + 20
        out[index] = line[:at] + (b"9" if line[at : at + 1] != b"9" else b"8") + line[at + 1 :]
    elif kind == "hash_field":  # the unhashed hash member changed
        out[index] = line[:24] + (b"0" if line[24:25] != b"0" else b"1") + line[25:]
    elif kind in ("duplicate_key", "spaced", "rehashed_edit"):
        event = copy.deepcopy(FULL[index - 1])
        if kind == "rehashed_edit":
            event.data = {**event.data, "extra": "1"}
        body = event.canonical_body()
        if kind == "duplicate_key":  # the line's own hash holds, over a duplicate member
            body = body[:-1] + b',"seq":%d}' % event.seq
        elif kind == "spaced":  # not canonical, but hashed as it stands
            body = body.replace(b'":', b'": ', 1)
        digest = hashlib.sha256(body).hexdigest()
        out[index] = b'{"type":"event","hash":"%s",%s' % (digest.encode(), body[1:])
    elif kind == "reordered":  # the same object, members in another order
        obj = orjson.loads(line)
        out[index] = orjson.dumps({k: obj[k] for k in reversed(list(obj))})
    elif kind == "dropped":
        del out[index]
    elif kind == "swapped":
        out[index], out[index + 1] = out[index + 1], out[index]
    elif kind == "extra_record":  # a record the careful pass skips
        out.insert(index, b'{"type":"note","text":"hello"}')
    return out


KINDS = [
    "byte",
    "hash_field",
    "duplicate_key",
    "spaced",
    "rehashed_edit",
    "reordered",
    "dropped",
    "swapped",
    "extra_record",
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seq", [1, 2, 300, 594])
def test_a_mutated_line_gets_the_careful_verdict(tmp_path: Path, kind: str, seq: int) -> None:
    lines = _line_mutations(_lines(FULL), seq, kind)
    from_file, careful = _both(tmp_path, lines)
    assert _verdict(from_file) == _verdict(careful)
    if kind not in ("reordered", "extra_record"):
        assert not from_file.ok


def test_a_rehashed_suffix_in_the_service_form_gets_the_careful_verdict(tmp_path: Path) -> None:
    """Edited and rehashed to the end, every line in the service's form and every link
    intact: only the signed checkpoint can tell, and the verdict is the careful one."""
    forged = copy.deepcopy(FULL)
    forged[199].data = {}
    _rehash_from(forged, 200)
    from_file, careful = _both(tmp_path, _lines(forged))
    assert not from_file.ok
    assert _verdict(from_file) == _verdict(careful)


values = st.none() | st.text(max_size=12) | st.integers() | st.binary(max_size=4)
data_values = st.dictionaries(
    st.text(max_size=6),
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=6)
    | st.lists(st.text(max_size=4) | st.integers(), max_size=3),
    max_size=4,
)


@settings(max_examples=800, deadline=None)
@given(
    seq=st.integers(min_value=-3, max_value=2**60) | st.text(max_size=3),
    fields=st.lists(values, min_size=10, max_size=10),
    data=data_values,
    as_stored=st.booleans(),
)
def test_a_rows_canonical_body_is_its_records(
    seq: Any, fields: list[Any], data: dict[str, Any], as_stored: bool
) -> None:
    prev_hash, hash_ = "0" * 64, "1" * 64
    try:
        stored: Any = pack_json(data, AUDIT) if as_stored else data
    except orjson.JSONEncodeError:
        return
    row = (seq, prev_hash, hash_, *fields, stored)
    try:
        expected: bytes | type[Exception] = store.record_of(row).canonical_body()
    except Exception as exc:  # the same refusal is all that is compared
        expected = type(exc)
    if isinstance(expected, bytes):
        assert store.canonical_row(row) == expected
    else:
        with pytest.raises(expected):
            store.canonical_row(row)
