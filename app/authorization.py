"""The authorization matrix, kept as data in ``authorization.yaml``.

Routes enforce it with their role dependencies (``app.deps``); the test suite generates a
case for every route × role × own/other's/missing object from this file and fails on any
route the file does not list, so the file and the code cannot drift apart silently.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

MATRIX_PATH = Path(__file__).with_name("authorization.yaml")
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class Access(StrEnum):
    public = "public"
    deny = "deny"
    allow = "allow"
    own = "own"


Matrix = dict[str, Access | dict[str, Access]]


@lru_cache(maxsize=1)
def development_only(path: Path = MATRIX_PATH) -> frozenset[str]:
    raw: dict[str, Any] = yaml.safe_load(path.read_text())
    return frozenset(raw.get("development_only", []))


@lru_cache(maxsize=1)
def load_matrix(path: Path = MATRIX_PATH) -> Matrix:
    raw: dict[str, Any] = yaml.safe_load(path.read_text())
    roles = list(raw["roles"])
    matrix: Matrix = {}
    for route, entry in raw["routes"].items():
        method = route.split(" ", 1)[0]
        if isinstance(entry, str):
            if entry != Access.public:
                raise ValueError(f"{route}: a bare value must be 'public'")
            matrix[route] = Access.public
            continue
        if sorted(entry) != sorted(roles):
            raise ValueError(f"{route}: every role must be listed: {roles}")
        parsed = {role: Access(value) for role, value in entry.items()}
        if method in WRITE_METHODS and parsed.get("auditor") in (Access.allow, Access.own):
            raise ValueError(f"{route}: auditors read and never write")
        matrix[route] = parsed
    return matrix


def route_keys(routes: list[Any]) -> set[str]:
    """``"METHOD /path"`` for every route, including those of included routers.

    FastAPI ≥ 0.160 keeps included routers as nested objects exposing
    ``effective_route_contexts()``; plain Starlette routes carry ``path`` and ``methods``.
    """
    keys: set[str] = set()
    for route in routes:
        contexts = getattr(route, "effective_route_contexts", None)
        items = list(contexts()) if callable(contexts) else [route]
        for item in items:
            path = getattr(item, "path_format", None) or getattr(item, "path", None)
            for method in getattr(item, "methods", None) or ():
                if method not in ("HEAD", "OPTIONS") and path:
                    keys.add(f"{method} {path}")
    return keys
