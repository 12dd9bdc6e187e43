"""Aggregate reports, k-anonymous, for auditors and admins (docs/console.md, "Reports")."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from app.auth import Principal
from app.deps import SessionDep, SettingsDep, require_roles
from app.errors import ValidationFailed, field_error
from app.models import Role
from app.models.base import utcnow
from app.openapi import ok, problem, responses
from app.reports import aggregates

ReportsDep = Annotated[Principal, Depends(require_roles(Role.auditor, Role.admin))]

router = APIRouter(prefix="/v1/reports", tags=["reports"], responses=responses(422))

Since = Annotated[
    date | None,
    Query(
        description="The first day (its ISO week is included). Default: 12 weeks before `until`."
    ),
]
Until = Annotated[
    date | None, Query(description="The last day (its ISO week is included). Default: today.")
]
Format = Annotated[Literal["json", "csv"], Query(description="`json` or `csv`.")]


class ReportRow(BaseModel):
    key: str = Field(description="The ISO week (2026-W47), the partner id or the rule id.")
    label: str | None = Field(description="The partner's name, where the key is a partner.")
    values: dict[str, float | int | None] = Field(
        description="One figure per column; null where suppressed."
    )
    total: int | None = Field(
        description="The line's total (referrals and outcomes); null where suppressed or "
        "where the report has no totals."
    )
    suppressed: list[str] = Field(description="The columns (and `total`) suppressed here.")


class ReportOut(BaseModel):
    report: str
    k: int = Field(description="No figure concerns fewer than k people (RUTA_REPORT_MIN_PEOPLE).")
    since: date = Field(description="The Monday the report starts on.")
    until: date = Field(description="The Sunday it ends on.")
    unit: str = Field(description="What the counts count: `referrals` or `decisions`.")
    columns: list[str]
    rows: list[ReportRow]


EXAMPLE: dict[str, Any] = {
    "report": "outcomes",
    "k": 11,
    "since": "2026-09-07",
    "until": "2026-12-06",
    "unit": "referrals",
    "columns": ["direct", "fell_back", "escalated", "fallback_rate", "escalation_rate"],
    "rows": [
        {
            "key": "2026-W47",
            "label": None,
            "values": {
                "direct": 31,
                "fell_back": None,
                "escalated": None,
                "fallback_rate": None,
                "escalation_rate": None,
            },
            "total": 44,
            "suppressed": ["escalated", "escalation_rate", "fallback_rate", "fell_back"],
        }
    ],
}

DESCRIPTION = (
    " Whole ISO weeks (UTC) from `since` to `until` (at most 106 weeks). A figure concerning "
    "fewer than k people is suppressed (null in JSON, `suppressed` in CSV), and so are the "
    "cells that would let it be recovered by subtracting the others from the line's total "
    '(docs/console.md, "Reports"). For auditors and admins.'
)


async def _report(
    name: str,
    session: SessionDep,
    settings: SettingsDep,
    since: date | None,
    until: date | None,
    format_: str,
) -> Any:
    try:
        period = aggregates.Period.of(since, until, utcnow().date())
    except ValueError as exc:
        raise ValidationFailed([field_error(("query", "since"), str(exc), "period")]) from None
    report = await aggregates.REPORTS[name](session, period, settings.report_min_people)
    if format_ == "csv":
        return Response(
            aggregates.to_csv(report),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="ruta-{name}.csv"'},
        )
    return report.to_json()


_OK = ok(EXAMPLE, "The report: JSON, or CSV with `format=csv`")
_OK[200]["content"]["text/csv"] = {"schema": {"type": "string"}}
_COMMON: dict[str, Any] = {
    "response_model": ReportOut,
    "responses": {**_OK, 422: problem("A period the report cannot cover")},
}


#: Each report's route: (name, summary, description).
ROUTES = (
    (
        "referrals",
        "Referrals per week, by service and urgency",
        "A line per week: referrals by service and urgency, and the week's total.",
    ),
    (
        "acknowledgement",
        "Time to acknowledge, per partner",
        "Per partner: how many referrals it acknowledged, and the median and 90th percentile "
        "of the hours from being given one to its first report on it.",
    ),
    (
        "outcomes",
        "Fallback and escalation rates, per week",
        "A line per week: referrals that stayed with their first partner (`direct`), fell back "
        "to another (`fell_back`), or needed a person at some point (`escalated`), the week's "
        "total, and the rates (shown only where their parts are).",
    ),
    ("rules", "The rules that fire most", "Per rule: the decisions it fired in, most first."),
)


def _add(name: str, summary: str, description: str) -> None:
    async def report(
        _who: ReportsDep,
        session: SessionDep,
        settings: SettingsDep,
        since: Since = None,
        until: Until = None,
        format: Format = "json",
    ) -> Any:
        return await _report(name, session, settings, since, until, format)

    report.__name__ = f"report_{name}"
    router.get(f"/{name}", summary=summary, description=description + DESCRIPTION, **_COMMON)(
        report
    )


for _route in ROUTES:
    _add(*_route)
