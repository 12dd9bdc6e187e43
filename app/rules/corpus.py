"""Screening corpora for ``rules diff`` and the benchmark: generated, or read from JSONL.

The generator is seeded and draws every field from its schema's value list, weighted so that
most screenings are ordinary and the rare branches (no consent, danger, minors) still occur
thousands of times in 100,000. Every generated screening passes ``ScreeningIn`` validation.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pydantic import ValidationError

from app.rules.symbols import SYMBOLS, Kind
from app.schemas.screening import (
    AgeBand,
    ConsentMethod,
    ConsentScope,
    ControlMethod,
    ExploitationType,
    InjurySeverity,
    Language,
    MigrationStatus,
    Need,
    Recruitment,
    Region,
    ScreeningIn,
    Sector,
    Sex,
    Suicidality,
    ToolName,
    parse_region,
)

_REGIONS = list(Region)
_NATIONALITIES = ["PE"] * 8 + ["VE", "BO", "CO", "EC", "BR"]
_LANGUAGES = [Language.es] * 10 + list(Language)
_SCOPES = list(ConsentScope)
_SEVERITY = [InjurySeverity.none] * 12 + list(InjurySeverity)
_SUICIDAL = [Suicidality.none] * 12 + list(Suicidality)
_MIGRATION = [MigrationStatus.national] * 4 + list(MigrationStatus)
_SEXES = list(Sex)
_BANDS = list(AgeBand)
_EXPLOITATION = list(ExploitationType)
_CONTROL = list(ControlMethod)
_RECRUITMENT = list(Recruitment)
_SECTORS = list(Sector)
_NEEDS = list(Need)
_EMPTY: frozenset[Any] = frozenset()
_TRI = (True, False, None)
_PREGNANT = (True, False, None, None, False)
#: How many members a generated set gets: mostly none, sometimes one to three.
_SET_SIZES = (0, 0, 0, 0, 0, 0, 1, 1, 2, 3)
_SOURCE = {
    "screener": "gen-001",
    "tool": {"name": ToolName.tvit, "version": "2.1"},
    "interview_language": Language.es,
    "screened_at": datetime(2026, 11, 20, 14, 40, tzinfo=UTC),
}


def _some(rng: random.Random, values: list[Any]) -> frozenset[Any]:
    r = rng.random
    k = _SET_SIZES[int(r() * 10)]
    if not k:
        return _EMPTY
    n = len(values)
    return frozenset([values[int(r() * n)] for _ in range(k)])  # duplicates merge: fine


def generate_document(rng: random.Random, make: Callable[..., Any] = dict) -> Any:
    """One random screening as a Python-mode document (enum members, frozensets).

    ``ScreeningIn.model_validate`` accepts every one (tests check thousands). With
    ``make=ScreeningView`` the same draws build an evaluable view directly, for ``rules diff``.
    """
    r = rng.random
    age: int | None = 8 + int(r() * 53) if r() < 0.85 else None
    given = r() < 0.8
    hours = round(r() * 300, 1) if r() < 0.15 else None
    return make(
        id=uuid.UUID(int=rng.getrandbits(128) & _UUID4_MASK | _UUID4_BITS),
        source=_SOURCE,
        subject=make(
            case_code="GEN-0001",
            age=age,
            age_band=_BANDS[int(r() * len(_BANDS))] if age is None and r() < 0.5 else None,
            age_estimated=r() < 0.3,
            age_disputed=r() < 0.05,
            minority_signs=r() < 0.1,
            sex=_SEXES[int(r() * len(_SEXES))],
            nationality=_NATIONALITIES[int(r() * len(_NATIONALITIES))] if r() < 0.9 else None,
            preferred_language=_LANGUAGES[int(r() * len(_LANGUAGES))],
            speaks_spanish=r() < 0.9,
            needs_interpreter=r() < 0.05,
            region=_REGIONS[int(r() * len(_REGIONS))],
            unaccompanied_minor=r() < 0.05,
            separated_child=r() < 0.03,
            caregiver_present=r() < 0.1,
            caregiver_suspected=r() < 0.05,
        ),
        consent=make(
            given=given,
            scopes=frozenset(s for s in _SCOPES if r() < 0.7) if given else frozenset(),
            share_identifying=given and r() < 0.6,
            method=ConsentMethod.verbal if given else ConsentMethod.not_obtained,
            lacks_capacity=r() < 0.02,
        ),
        safety=make(
            immediate_danger=r() < 0.05,
            trafficker_nearby=r() < 0.08,
            can_return_safely=_TRI[int(r() * len(_TRI))],
            threats=r() < 0.08,
            phone_controlled=r() < 0.1,
        ),
        indicators=make(
            exploitation_types=_some(rng, _EXPLOITATION),
            control_methods=_some(rng, _CONTROL),
            recruitment=_some(rng, _RECRUITMENT),
            sectors=_some(rng, _SECTORS),
        ),
        health=make(
            injury_severity=_SEVERITY[int(r() * len(_SEVERITY))],
            hours_since_sexual_violence=hours,
            pregnant=_PREGNANT[int(r() * len(_PREGNANT))],
            sti_symptoms=r() < 0.1,
            febrile_illness=r() < 0.1,
            mining_exposure=r() < 0.1,
            medical_care_withheld=r() < 0.05,
        ),
        mental_health=make(
            suicidal=_SUICIDAL[int(r() * len(_SUICIDAL))],
            acute_distress=r() < 0.15,
            psychosis_signs=r() < 0.02,
            positive_screen=r() < 0.2,
        ),
        legal=make(
            has_documents=_TRI[int(r() * len(_TRI))],
            documents_withheld=r() < 0.1,
            migration_status=_MIGRATION[int(r() * len(_MIGRATION))],
            wants_police_report=r() < 0.1,
            unpaid_wages=r() < 0.1,
        ),
        needs_expressed=_some(rng, _NEEDS),
    )


_UUID4_MASK = ~(0xF000 << 64) & ~(0xC000 << 48)
_UUID4_BITS = (0x4000 << 64) | (0x8000 << 48)
_GROUPS = ("subject", "consent", "safety", "indicators", "health", "mental_health", "legal")


def trusted_view(doc: dict[str, Any]) -> ScreeningView:
    """A generated document as attributes. Only for documents ``generate_document`` made."""
    view = ScreeningView(**doc)
    for group in _GROUPS:
        setattr(view, group, ScreeningView(**doc[group]))
    return view


def generate_views(count: int, seed: int = 0) -> list[ScreeningView]:
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets
    return [generate_document(rng, ScreeningView) for _ in range(count)]


def generate_documents(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """``count`` screening documents, the same for the same seed."""
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets
    return [generate_document(rng) for _ in range(count)]


def generate_screenings(count: int, seed: int = 0) -> list[ScreeningIn]:
    """``count`` validated screenings, the same for the same seed."""
    validate = ScreeningIn.model_validate
    return [validate(doc) for doc in generate_documents(count, seed)]


# --- A fast read-only view of a screening document --------------------------------------
#
# Validating 100,000 screenings with pydantic takes longer than ``rules diff`` may. The rules
# read only the fields in the symbol table, so a view checks exactly those (type, enum
# membership, range, format), fills in the model's defaults, and exposes them as attributes,
# which is all the compiled rules and the consent step touch. ``--strict`` in ``rules diff``
# validates whole documents with ScreeningIn instead; tests show both give equal decisions.


class ScreeningView(SimpleNamespace):
    """The rule-readable fields of a screening document, checked, as attributes."""


_REQUIRED = object()
_BAD = object()


def _defaults() -> dict[str, Any]:
    from pydantic_core import PydanticUndefined

    out: dict[str, Any] = {}
    for path in SYMBOLS:
        *parents, name = path.split(".")
        model: Any = ScreeningIn
        for parent in parents:
            model = model.model_fields[parent].annotation
        info = model.model_fields[name]
        out[path] = info.default if info.default is not PydanticUndefined else _REQUIRED
    return out


def _group(doc: Any, path: tuple[str, ...]) -> dict[str, Any]:
    source = doc
    for part in path:
        source = source.get(part)
        if source is None:
            return {}
        if type(source) is not dict:
            raise ValueError(".".join(path))
    return source  # type: ignore[no-any-return]


def _generate_view_builder() -> Any:
    """Compile ``view(doc)``: check each rule-readable field of a JSON document, fill the
    model's defaults, and build nested ``ScreeningView`` objects. Generated from the symbol
    table only (paths, kinds, enums, ranges), like the rules themselves."""
    defaults = _defaults()
    ns: dict[str, Any] = {
        "__builtins__": {
            "type": type,
            "isinstance": isinstance,
            "frozenset": frozenset,
            "ValueError": ValueError,
        },
        "NS": ScreeningView,
        "_group": _group,
        "_REQUIRED": _REQUIRED,
        "_BAD": _BAD,
        "int": int,
        "float": float,
        "str": str,
        "list": list,
        "dict": dict,
        "bool": bool,
        "KeyError": KeyError,
        "TypeError": TypeError,
        "parse_region": parse_region,
    }
    lines = [
        "def view(doc):",
        "    if type(doc) is not dict:",
        "        raise ValueError('document')",
    ]
    groups: dict[str, list[tuple[str, str]]] = {}
    for k, (path, field) in enumerate(SYMBOLS.items()):
        *parents, name = path.split(".")
        group = ".".join(parents)
        gvar = "g_" + "_".join(parents) if parents else "doc"
        if group and group not in groups:
            lines.append(f"    {gvar} = _group(doc, {tuple(parents)!r})")
        groups.setdefault(group, []).append((name, f"v{k}"))
        ns[f"D{k}"] = defaults[path]
        v = f"v{k}"
        bad = f"        raise ValueError({path!r})"
        lines.append(f"    {v} = {gvar}.get({name!r}, D{k})")
        lines.append(f"    if {v} is _REQUIRED:")
        lines.append(bad)
        none_ok = f"{v} is not None and " if field.nullable else ""
        kind = field.kind
        if kind is Kind.boolean:
            lines.append(f"    if {none_ok}type({v}) is not bool:")
            lines.append(bad)
        elif kind in (Kind.integer, Kind.number):
            types_ok = f"type({v}) is int" + (
                f" or type({v}) is float" if kind is Kind.number else ""
            )
            checks = [f"not ({types_ok})"]
            if field.minimum is not None:
                checks.append(f"{v} < {field.minimum!r}")
            if field.maximum is not None:
                checks.append(f"{v} > {field.maximum!r}")
            lines.append(f"    if {none_ok}({' or '.join(checks)}):")
            lines.append(bad)
        elif kind is Kind.text:
            ns[f"P{k}"] = field.pattern
            test = f"type({v}) is not str"
            if field.pattern is not None:
                test += f" or P{k}.fullmatch({v}) is None"
            lines.append(f"    if {none_ok}({test}):")
            lines.append(bad)
        elif kind is Kind.choice:
            assert field.enum is not None
            ns[f"E{k}"] = {m.value: m for m in field.enum}
            lines.append(f"    if {v} is not None:")
            lines.append(f"        raw = {v}")
            lines.append(f"        {v} = E{k}.get(raw, _BAD) if isinstance(raw, str) else _BAD")
            lines.append(f"        if {v} is _BAD:")
            if field.enum is Region:
                lines.append("            try:")
                lines.append(
                    f"                {v} = parse_region(raw) if type(raw) is str else _BAD"
                )
                lines.append("            except ValueError:")
                lines.append(f"                {v} = _BAD")
                lines.append(f"        if {v} is _BAD:")
            lines.append("    " + bad)
            if not field.nullable:
                lines.append(f"    if {v} is None:")
                lines.append(bad)
        else:
            assert field.enum is not None
            ns[f"E{k}"] = {m.value: m for m in field.enum} | {m: m for m in field.enum}
            lines.append(f"    if type({v}) is not frozenset:")
            lines.append(f"        if type({v}) is not list:")
            lines.append("    " + bad)
            lines.append("        try:")
            lines.append(f"            {v} = frozenset([E{k}[x] for x in {v}])")
            lines.append("        except (KeyError, TypeError):")
            lines.append("    " + bad)
    # Nested groups are built innermost first, then attached to their parents.
    built: dict[str, str] = {}
    for group in sorted(groups, key=lambda g: -g.count(".") if g else 1):
        if not group:
            continue
        items = [f"{name}={var}" for name, var in groups[group]]
        children = [g for g in built if g.rsplit(".", 1)[0] == group and "." in g]
        items += [f"{g.rsplit('.', 1)[1]}={built[g]}" for g in children]
        var = "n_" + group.replace(".", "_")
        lines.append(f"    {var} = NS({', '.join(items)})")
        built[group] = var
    top = [f"{name}={var}" for name, var in groups.get("", [])]
    top += [f"{g}={built[g]}" for g in built if "." not in g]
    lines.append(f"    return NS({', '.join(top)})")
    source = "\n".join(lines) + "\n"
    exec(compile(source, "<screening view>", "exec"), ns)  # noqa: S102 - from the schema only
    return ns["view"]


_VIEW: Any = None


def screening_view(doc: dict[str, Any]) -> ScreeningView:
    """Raises ``ValueError`` naming the field path (never its value) when a field is invalid."""
    global _VIEW
    if _VIEW is None:
        _VIEW = _generate_view_builder()
    result: ScreeningView = _VIEW(doc)
    return result


def read_jsonl(path: Path) -> Iterator[tuple[int, ScreeningIn]]:
    """Screenings from a JSONL file, one ScreeningIn document a line (blank lines skipped)."""
    validate = ScreeningIn.model_validate
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield number, validate(json.loads(line))
            except (ValueError, ValidationError) as exc:
                kind = "invalid JSON" if isinstance(exc, json.JSONDecodeError) else "invalid"
                raise CorpusError(f"{path}:{number}: {kind} screening") from None


class CorpusError(Exception):
    """A corpus that cannot be read. Messages name the line, never its content."""


def parse_corpus_spec(spec: str) -> tuple[str, int | Path]:
    """``generated``, ``generated:N`` or a file path."""
    if spec == "generated":
        return "generated", 10_000
    if spec.startswith("generated:"):
        text = spec.removeprefix("generated:")
        if not text.isdigit() or int(text) <= 0:
            raise CorpusError("generated:N needs a positive whole number N")
        return "generated", int(text)
    return "file", Path(spec)
