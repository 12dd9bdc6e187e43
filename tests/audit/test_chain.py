"""The chain's canonical JSON is RFC 8785 byte for byte, whichever path writes it."""

from __future__ import annotations

from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from app.audit.chain import canonical

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
