"""OpenAPI pieces shared by every router: the problem+json schema and error responses."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

_ISO = re.compile(
    r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})?)?$"
)


def _iso_only(value: Any) -> Any:
    """Query timestamps must be ISO 8601 text: pydantic would also read 0.5 as a Unix time."""
    if isinstance(value, str) and not _ISO.match(value.strip()):
        raise ValueError("expected an ISO 8601 date or date-time, e.g. 2026-11-20T00:00:00Z")
    return value


#: A timestamp query parameter: ISO 8601 text only.
IsoDatetime = Annotated[datetime, BeforeValidator(_iso_only)]


class FieldProblem(BaseModel):
    path: str = Field(description="Dotted path of the invalid field, e.g. `subject.age`.")
    pointer: str = Field(description="RFC 6901 JSON pointer to the field, e.g. `#/subject/age`.")
    message: str = Field(description="What is wrong, in the negotiated language.")
    code: str = Field(description="A stable machine-readable code, e.g. `missing`.")


class Problem(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
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
            ]
        },
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
