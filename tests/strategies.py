"""Hypothesis strategies shared by tests."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st


def json_values(keys: st.SearchStrategy[Any] | None = None) -> st.SearchStrategy[Any]:
    """Any JSON value: nulls, booleans, 64-bit integers, finite floats, any text, and lists
    and objects of them (with ``keys`` as object keys; text by default)."""
    key_strategy = st.text(max_size=8) if keys is None else keys
    return st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**63 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(),
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(key_strategy, children, max_size=4)
        ),
        max_leaves=20,
    )
