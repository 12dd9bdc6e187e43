"""The chain's canonical JSON is RFC 8785 byte for byte, whichever path writes it."""

from __future__ import annotations

from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from app.audit.chain import REF_KEYS, EventRecord, canonical

scalars = st.none() | st.booleans() | st.integers() | st.text() | st.floats(allow_nan=False)
documents = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


def jcs(document: Any) -> bytes | type[Exception]:
    try:
        out: bytes = rfc8785.dumps(document)
        return out
    except Exception as exc:
        return type(exc)


def assert_same(document: Any) -> None:
    expected = jcs(document)
    if isinstance(expected, bytes):
        assert canonical(document) == expected
    else:
        with pytest.raises(expected):
            canonical(document)


@settings(max_examples=2000, deadline=None)
@given(documents)
def test_canonical_matches_rfc8785(document: Any) -> None:
    assert_same(document)


@pytest.mark.parametrize(
    "document",
    [
        {"b": 1, "a": [True, None, "x"]},
        {"ctrl": '\x00\x01\x1f\x7f\b\f\n\r\t"\\', "uni": "ñandú \u2028 \U0001f600"},
        {"\ue000": 1, "\U0001f600": 2},  # UTF-16 order differs from code-point order
        {"n": 2**53, "m": -(2**53) + 1},
        {"f": 1.5e-7},
    ],
)
def test_canonical_edge_cases(document: Any) -> None:
    assert_same(document)


refs_values = st.none() | st.text(max_size=40) | st.integers() | st.floats(allow_nan=False)


@settings(max_examples=1500, deadline=None)
@given(
    seq=st.integers(min_value=-3, max_value=2**60) | st.text(max_size=3),
    data=documents,
    actor=st.dictionaries(st.sampled_from(["type", "id", "role", "x"]), refs_values),
    refs=st.fixed_dictionaries({k: refs_values for k in REF_KEYS}) | st.just({}),
)
def test_an_events_canonical_body_matches_rfc8785(
    seq: Any, data: Any, actor: Any, refs: Any
) -> None:
    """The verifier's fast path for an event's body writes what RFC 8785 writes, or
    refuses what it refuses, whatever a tampered export puts in the fields."""
    event = EventRecord(
        seq=seq,
        prev_hash="0" * 64,
        occurred_at="2026-12-01T00:00:00.000000Z",
        action="screening.received",
        actor=actor,
        refs=refs,
        data=data,
    )
    expected = jcs(event.body())
    if isinstance(expected, bytes):
        assert event.canonical_body() == expected
    else:
        with pytest.raises(expected):
            event.canonical_body()
