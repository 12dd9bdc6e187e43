"""Sets in a screening (and in any Strict model) serialise sorted.

The screening's fingerprint is its canonical JSON, so two equal screenings must dump
byte-equal whatever order their sets were sent in, or a clinic's honest retry would be
answered 409. Only models deriving from SortedSets sort, and a Strict model with a set field
that does not derive from it cannot be defined.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.partners.directory import Partner
from app.schemas.examples import EXAMPLE_SCREENING
from app.schemas.screening import (
    ConsentScope,
    ControlMethod,
    ExploitationType,
    Need,
    ScreeningIn,
    Sector,
    SortedSets,
    Strict,
)
from app.services.intake import canonical_json
from tests.delivery.conftest import partner_document

SET_PATHS: list[tuple[tuple[str, ...], list[str]]] = [
    (("needs_expressed",), [n.value for n in Need]),
    (("consent", "scopes"), [c.value for c in ConsentScope]),
    (("indicators", "exploitation_types"), [e.value for e in ExploitationType]),
    (("indicators", "control_methods"), [c.value for c in ControlMethod]),
    (("indicators", "sectors"), [s.value for s in Sector]),
]


def _with(document: dict[str, Any], path: tuple[str, ...], value: list[str]) -> None:
    node = document
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


@given(st.data())
def test_equal_screenings_dump_byte_equal_whatever_the_set_order(data: st.DataObject) -> None:
    first = copy.deepcopy(EXAMPLE_SCREENING)
    second = copy.deepcopy(EXAMPLE_SCREENING)
    for path, vocabulary in SET_PATHS:
        chosen = data.draw(st.lists(st.sampled_from(vocabulary), unique=True, max_size=5))
        _with(first, path, chosen)
        _with(second, path, data.draw(st.permutations(chosen)))
    dumped = ScreeningIn.model_validate(first).model_dump(mode="json")
    again = ScreeningIn.model_validate(second).model_dump(mode="json")
    assert canonical_json(dumped) == canonical_json(again)
    for path, _ in SET_PATHS:
        node: Any = dumped
        for key in path:
            node = node[key]
        assert node == sorted(node)


def test_python_mode_dumps_sorted_lists_too() -> None:
    document = copy.deepcopy(EXAMPLE_SCREENING)
    document["indicators"]["control_methods"] = ["threats", "debt_bondage", "documents_withheld"]
    dumped = ScreeningIn.model_validate(document).model_dump()
    assert dumped["indicators"]["control_methods"] == sorted(
        ControlMethod(c) for c in ("threats", "debt_bondage", "documents_withheld")
    )


def test_a_strict_model_with_a_set_must_sort_it() -> None:
    with pytest.raises(TypeError, match="SortedSets"):

        class Unsorted(Strict):
            tags: frozenset[str] = frozenset()

    class Tagged(SortedSets):
        tags: frozenset[str] | None = None
        name: str = ""

    assert Tagged.set_fields == ("tags",)
    assert Tagged(tags=frozenset({"b", "c", "a"})).model_dump(mode="json")["tags"] == [
        "a",
        "b",
        "c",
    ]
    assert Tagged().model_dump(mode="json") == {"tags": None, "name": ""}


def test_partner_sets_dump_sorted() -> None:
    document = partner_document(
        "p1",
        "https://partner.example/hook",
        services=["psychological", "medical", "legal"],
        languages=["qu", "es", "ay"],
    )
    dumped = json.loads(Partner.model_validate(document).model_dump_json())
    assert dumped["services"] == ["legal", "medical", "psychological"]
    assert dumped["languages"] == ["ay", "es", "qu"]
