"""OpenAPI pieces shared by every router: the problem+json schema, error responses, success
examples, and the document generator that makes every error response problem+json."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from fastapi import FastAPI
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from app import errors
from app.schemas.screening import AwareDatetime

PROBLEM_JSON = "application/problem+json"

_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})$")


def _iso_only(value: Any) -> Any:
    """Query timestamps must be ISO 8601 date-times with an offset: pydantic would also read
    0.5 as a Unix time, and a bare date or a time without an offset as a naive datetime,
    which cannot be compared with the stored UTC times."""
    if isinstance(value, str) and not _ISO.match(value.strip()):
        raise ValueError(ISO_EXPECTED)
    return value


ISO_EXPECTED = "expected an ISO 8601 date-time with a UTC offset, e.g. 2026-11-20T00:00:00Z"

#: A timestamp query parameter: ISO 8601 text with an offset, which UTC can hold (as
#: :data:`~app.schemas.screening.AwareDatetime`, whose check runs after this one), in UTC.
IsoDatetime = Annotated[AwareDatetime, BeforeValidator(_iso_only)]

#: A timestamp a route has already rendered as RFC 3339 text (kept as sent).
Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


#: What a 422 looks like: every invalid field's path, never the value sent.
VALIDATION_PROBLEM: dict[str, Any] = {
    "type": "/problems/validation",
    "title": "The request is not valid",
    "status": 422,
    "detail": "See `errors` for each invalid field.",
    "instance": "/v1/screenings",
    "errors": [
        {
            "path": "subject.age",
            "pointer": "#/subject/age",
            "message": "Input should be greater than or equal to 0",
            "code": "greater_than_equal",
        }
    ],
}


class FieldProblem(BaseModel):
    path: str = Field(description="Dotted path of the invalid field, e.g. `subject.age`.")
    pointer: str = Field(description="RFC 6901 JSON pointer to the field, e.g. `#/subject/age`.")
    message: str = Field(description="What is wrong, in the negotiated language.")
    code: str = Field(description="A stable machine-readable code, e.g. `missing`.")


class Problem(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={"examples": [VALIDATION_PROBLEM]},
    )

    type: str = Field(description="A URI reference naming the problem type.")
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldProblem] | None = Field(
        default=None, description="Validation errors only: one entry per invalid field."
    )


def problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "model": Problem,
        "content": {"application/problem+json": {}},
    }


#: Responses every authenticated route can give.
AUTHENTICATED: dict[int | str, dict[str, Any]] = {
    400: problem("Malformed request (e.g. the body is not JSON)"),
    401: problem("No valid API key or token"),
    403: problem("The caller's role may not use this route"),
    413: problem("The body is larger than allowed"),
    415: problem("The body is not JSON"),
    422: problem("Invalid input; `errors` names each field path"),
    429: problem("Rate limit exceeded; see Retry-After"),
    500: problem("Internal error (no details are disclosed)"),
}


def responses(*extra: int, **described: str) -> dict[int | str, dict[str, Any]]:
    """AUTHENTICATED plus route-specific problem statuses, e.g. ``responses(404, 409)``."""
    defaults = {
        404: "Not found (or not visible to the caller)",
        409: "Conflict with the current state",
        503: "Not ready",
    }
    out = dict(AUTHENTICATED)
    for status in extra:
        out[status] = problem(described.get(f"s{status}", defaults.get(status, "Error")))
    return out


#: Examples as written, by their form without nulls (see :func:`_restore_examples`).
_EXAMPLES: dict[str, Any] = {}


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_without_nulls(v) for v in value]
    return value


def _key(value: Any) -> str:
    return json.dumps(_without_nulls(value), sort_keys=True, default=str)


def example(value: Any) -> Any:
    """Register an example so the document shows it as written (nulls included)."""
    encoded = jsonable_encoder(value)
    _EXAMPLES[_key(encoded)] = encoded
    return value


def ok(value: Any, description: str = "Success", status: int = 200) -> dict[int | str, Any]:
    """A JSON success response with an example, e.g. ``responses={**ok({...}), ...}``.

    FastAPI merges the route's response-model schema into it, so the example sits next to
    the schema it must validate against (tests/test_openapi.py checks that it does).
    """
    return {
        status: {
            "description": description,
            "content": {"application/json": {"example": example(value)}},
        }
    }


def _restore_examples(node: Any) -> None:
    """FastAPI renders the document with ``exclude_none``, which also drops every ``null``
    inside an example, leaving examples that no longer match their schema (a required but
    nullable field goes missing). Put registered examples back as written."""
    if isinstance(node, list):
        for item in node:
            _restore_examples(item)
        return
    if not isinstance(node, dict):
        return
    for name, value in node.items():
        if name == "example" and not isinstance(value, str):
            node[name] = _EXAMPLES.get(_key(value), value)
        elif name == "examples" and isinstance(value, list):
            node[name] = [_EXAMPLES.get(_key(v), v) for v in value]
        elif name == "examples" and isinstance(value, dict):
            for item in value.values():
                if isinstance(item, dict) and "value" in item:
                    item["value"] = _EXAMPLES.get(_key(item["value"]), item["value"])
        else:
            _restore_examples(value)


def _problem_example(status: int, description: str) -> dict[str, Any]:
    if status == 422:
        return VALIDATION_PROBLEM
    known: dict[int, type[errors.RutaError]] = {
        cls.status: cls
        for cls in (
            errors.BadRequest,
            errors.Unauthorized,
            errors.Forbidden,
            errors.NotFound,
            errors.Conflict,
            errors.PayloadTooLarge,
            errors.UnsupportedMediaType,
            errors.TooManyRequests,
            errors.ServiceUnavailable,
            errors.RutaError,
        )
    }
    cls = known.get(status)
    return {
        "type": cls.type if cls else "about:blank",
        "title": cls.title if cls else description,
        "status": status,
        "detail": description,
    }


def _finish(document: dict[str, Any]) -> None:
    _restore_examples(document.get("paths", {}))
    _restore_examples(document.get("components", {}))
    components = document.setdefault("components", {}).setdefault("schemas", {})
    problem_schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, schema in problem_schema.pop("$defs", {}).items():
        components.setdefault(name, schema)
    components.setdefault("Problem", problem_schema)
    for item in document.get("paths", {}).values():
        for operation in item.values():
            for status, response in operation.get("responses", {}).items():
                if status[:1] not in ("4", "5"):
                    continue
                description = response.get("description") or "Error"
                response["content"] = {
                    PROBLEM_JSON: {
                        "schema": {"$ref": "#/components/schemas/Problem"},
                        "example": _problem_example(int(status), description),
                    }
                }
    text = json.dumps(document)
    for unused in ("HTTPValidationError", "ValidationError"):
        if f"#/components/schemas/{unused}" not in text:
            components.pop(unused, None)


def install(app: FastAPI) -> None:
    """Make every error response in the OpenAPI document RFC 9457
    ``application/problem+json`` (the ``Problem`` schema and an example for its status), and
    show examples as written.

    FastAPI would otherwise also advertise ``application/json`` for error responses, and its
    own 422 ``HTTPValidationError`` shape, which Ruta never sends. FastAPI still generates
    (and caches) the document; this finishes each new one once.
    """
    generate = app.openapi
    finished: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        document = generate()
        if not finished or finished[0] is not document:
            _finish(document)
            finished[:] = [document]
        return document

    app.openapi = openapi  # type: ignore[method-assign]
