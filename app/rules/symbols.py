"""The typed symbol table: every screening field a rule may read, built from ``ScreeningIn``.

Rules are checked against the same pydantic model the API validates with, so a field the
API does not know cannot appear in a rule, and a rule can never read a personal field.
"""

from __future__ import annotations

import re
import types
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from app.schemas.screening import PERSONAL_PATHS, ScreeningIn


class Kind(StrEnum):
    boolean = "boolean"
    integer = "integer"
    number = "number"
    text = "text"
    choice = "choice"  # one value of an enum
    choices = "choices"  # a set of enum values


@dataclass(frozen=True)
class Field:
    path: str
    kind: Kind
    nullable: bool
    enum: type[Enum] | None = None
    pattern: re.Pattern[str] | None = None
    minimum: float | None = None
    maximum: float | None = None

    @property
    def attrs(self) -> tuple[str, ...]:
        return tuple(self.path.split("."))

    def describe(self) -> str:
        kind = {
            Kind.boolean: "true/false",
            Kind.integer: "a whole number",
            Kind.number: "a number",
            Kind.text: "text",
            Kind.choice: f"one of {self.enum.__name__}" if self.enum else "a choice",
            Kind.choices: f"a set of {self.enum.__name__}" if self.enum else "a set",
        }[self.kind]
        return kind + (", may be unknown (null)" if self.nullable else ", always known")


#: Fields rules may not read, and why. Personal fields come from the screening schema.
FORBIDDEN: dict[str, str] = {
    **{".".join(p): "is personal data; rules may not read personal fields" for p in PERSONAL_PATHS},
    "id": "is an identifier; rules may not read identifiers",
    "schema_version": "is not a screening fact",
    "subject.case_code": "is an identifier; rules may not read identifiers",
    "source.screener": "is an identifier; rules may not read identifiers",
}


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        nullable = len(args) != len(get_args(annotation))
        if len(args) == 1:
            return args[0], nullable
    return annotation, False


def _strip_annotated(annotation: Any) -> tuple[Any, list[Any]]:
    metadata: list[Any] = []
    while hasattr(annotation, "__metadata__"):
        metadata.extend(annotation.__metadata__)
        annotation = annotation.__origin__
    return annotation, metadata


def _constraints(metadata: list[Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in metadata:
        for name in ("pattern", "ge", "le", "gt", "lt"):
            value = getattr(item, name, None)
            if value is not None:
                found[name] = value
        for sub in getattr(item, "metadata", ()) or ():
            found.update(_constraints([sub]))
    return found


def _field_for(path: str, annotation: Any, metadata: list[Any]) -> Field | None:
    annotation, nullable = _unwrap_optional(annotation)
    annotation, more = _strip_annotated(annotation)
    annotation, nullable2 = _unwrap_optional(annotation)
    nullable = nullable or nullable2
    c = _constraints(metadata + more)
    pattern = re.compile(c["pattern"]) if "pattern" in c else None
    minimum = c.get("ge", c.get("gt"))
    maximum = c.get("le", c.get("lt"))
    if annotation is bool:
        return Field(path, Kind.boolean, nullable)
    if annotation is int:
        return Field(path, Kind.integer, nullable, minimum=minimum, maximum=maximum)
    if annotation is float:
        return Field(path, Kind.number, nullable, minimum=minimum, maximum=maximum)
    if annotation is str:
        return Field(path, Kind.text, nullable, pattern=pattern)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return Field(path, Kind.choice, nullable, enum=annotation)
    if get_origin(annotation) is frozenset:
        (member,) = get_args(annotation)
        if isinstance(member, type) and issubclass(member, Enum):
            return Field(path, Kind.choices, nullable, enum=member)
    if get_origin(annotation) is Literal:
        return None
    return None  # dates, times and free structures are not rule material


def _walk(model: type[BaseModel], prefix: str, out: dict[str, Field]) -> None:
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        if path in FORBIDDEN or (info.description or "").startswith("Personal"):
            continue
        annotation, _ = _unwrap_optional(info.annotation)
        annotation, _ = _strip_annotated(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            _walk(annotation, f"{path}.", out)
            continue
        field = _field_for(path, info.annotation, list(info.metadata))
        if field is not None:
            out[path] = field


def build_symbols(model: type[BaseModel] = ScreeningIn) -> dict[str, Field]:
    symbols: dict[str, Field] = {}
    _walk(model, "", symbols)
    return symbols


SYMBOLS: dict[str, Field] = build_symbols()
