"""Charts and aggregate reports for auditors and admins: the same k-anonymous reports as
``GET /v1/reports/…``, drawn on the server, each with its table of numbers."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from app.console.deps import ReportsPageDep
from app.console.web import PREFIX, ConsoleRoute, Page, render
from app.deps import SessionDep, SettingsDep
from app.errors import ValidationFailed, field_error
from app.models.base import utcnow
from app.reports import aggregates, charts

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)


@router.get("/reports")
async def reports(
    request: Request,
    signed: ReportsPageDep,
    session: SessionDep,
    settings: SettingsDep,
    since: Annotated[date | None, Query()] = None,
    until: Annotated[date | None, Query()] = None,
) -> HTMLResponse:
    try:
        period = aggregates.Period.of(since, until, utcnow().date())
    except ValueError as exc:
        raise ValidationFailed([field_error(("query", "since"), str(exc), "period")]) from None
    k = settings.report_min_people
    built = [await build(session, period, k) for build in aggregates.REPORTS.values()]
    t = Page(request, settings).t
    drawn = await asyncio.to_thread(
        lambda: [charts.CHARTS[report.name](report, t) if report.rows else None for report in built]
    )
    return render(
        request,
        "reports.html",
        {
            "reports": list(zip(built, drawn, strict=True)),
            "k": k,
            "since": period.start,
            "until": period.end - timedelta(days=1),
        },
    )
