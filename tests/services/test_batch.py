"""app.services.batch: what a batch item's result may repeat of what was sent."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from app.services.batch import shown_id


@given(st.uuids())
def test_a_uuid_id_is_shown_in_its_canonical_form(value: uuid.UUID) -> None:
    assert shown_id(str(value).upper()) == str(value)
    assert shown_id(value.hex) == str(value)


@given(st.one_of(st.text(), st.integers(), st.none(), st.lists(st.text()), st.floats()))
def test_anything_else_is_never_repeated(value: object) -> None:
    """An invalid item's `id` may hold a name or a phone number: it is shown only if it
    is a UUID, and then only as the UUID."""
    shown = shown_id(value)
    if shown is not None:
        assert isinstance(value, str)
        assert shown == str(uuid.UUID(value))


def test_a_name_in_the_id_field_is_not_shown() -> None:
    assert shown_id("María Quispe, 987 654 321") is None
