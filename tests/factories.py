"""Screening payloads for tests. People are invented; canaries mark personal fields."""

from __future__ import annotations

import copy
import uuid
from typing import Any

from app.schemas.examples import EXAMPLE_SCREENING


def screening(**overrides: Any) -> dict[str, Any]:
    """The README's example with a fresh id; ``overrides`` use dotted paths."""
    body = copy.deepcopy(EXAMPLE_SCREENING)
    body["id"] = str(uuid.uuid4())
    for dotted, value in overrides.items():
        parts = dotted.split("__")
        target = body
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        if value is ...:
            target.pop(parts[-1], None)
        else:
            target[parts[-1]] = value
    return body


def adult_consenting(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "subject__age": 27,
        "subject__age_estimated": False,
        "subject__unaccompanied_minor": False,
        "consent__scopes": ["medical", "psychological", "legal", "protection"],
    }
    base.update(overrides)
    return screening(**base)
