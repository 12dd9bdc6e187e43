"""Error bodies repeat a caller's names only when they look like identifiers."""

from __future__ import annotations

import pytest

from app.errors import WITHHELD, field_error, shown_name


@pytest.mark.parametrize(
    "name",
    ["nmae", "subject", "screened_at", "minor-protection", "v1.2", "x" * 64, "field123456", 0, 17],
)
def test_identifier_like_names_and_indexes_are_shown(name: int | str) -> None:
    assert shown_name(name) == str(name)


@pytest.mark.parametrize(
    "name",
    [
        "María Quispe",  # a space, and a letter outside ASCII
        "maria@example.org",
        "+51999888777",
        "51999888777",  # digits only: a phone number
        "999-888-777",  # seven digits or more, however split
        "DNI.4455667",
        "x" * 65,
        "",
        "a/b",
        "Quispe\n",
    ],
)
def test_other_names_are_withheld(name: str) -> None:
    assert shown_name(name) == WITHHELD


def test_a_field_error_withholds_each_part_on_its_own() -> None:
    error = field_error(("subject", "María Quispe", 0), "Unknown field.", "extra_forbidden")
    assert error["path"] == f"subject.{WITHHELD}.0"
    assert error["pointer"] == f"#/subject/{WITHHELD}/0"
    assert "Quispe" not in str(error)
