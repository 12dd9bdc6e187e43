"""The auditor's pages: the referral log with the API's filters, one referral explained,
a screening's disclosures, and the audit trail's last verification and checkpoint with a
button that verifies it now. The same services as ``GET /v1/referrals``,
``GET /v1/referrals/{id}``, ``GET /v1/screenings/{id}/disclosures`` and
``GET /v1/audit/verify`` (the verification recorded as ``audit.verified``)."""

from __future__ import annotations

import uuid
from datetime import date, datetime, time, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from app.console import trail
from app.console.deps import AuditorPageDep
from app.console.web import PREFIX, ConsoleRoute, render
from app.deps import SessionDep, SettingsDep
from app.referrals import log
from app.schemas.screening import ServiceCategory
from app.settings import Settings

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)

Blank = Annotated[str | None, Query(max_length=64)]


def _day_start(day: date | None, settings: Settings) -> datetime | None:
    """Midnight of ``day`` in the console's time zone (the dates auditors pick are local)."""
    if day is None:
        return None
    return datetime.combine(day, time(0), ZoneInfo(settings.console_timezone))


def _none(value: str | None) -> str | None:
    """A filter left empty in the form means no filter."""
    return value or None


@router.get("/log")
async def referral_log(
    request: Request,
    signed: AuditorPageDep,
    session: SessionDep,
    settings: SettingsDep,
    status: Annotated[str | None, Query(max_length=16)] = None,
    service: Annotated[ServiceCategory | None, Query()] = None,
    urgency: Annotated[str | None, Query(pattern="^(emergency|urgent|routine|)$")] = None,
    partner_id: Blank = None,
    region: Annotated[str | None, Query(max_length=32)] = None,
    created_from: Annotated[date | None, Query()] = None,
    created_to: Annotated[date | None, Query()] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    filters = log.LogFilter(
        status=_none(status),
        service=service.value if service else None,
        urgency=_none(urgency),
        partner_id=_none(partner_id),
        region=_none(region),
        created_from=_day_start(created_from, settings),
        created_to=_day_start(created_to + timedelta(days=1), settings) if created_to else None,
    )
    items, next_cursor = await log.list_referrals(session, filters, cursor=_none(cursor), limit=50)
    query = {k: v for k, v in request.query_params.items() if k != "cursor" and v}
    return render(
        request,
        "log.html",
        {
            "items": items,
            "next_cursor": next_cursor,
            "filters": query,
            "services": list(ServiceCategory),
        },
    )


@router.get("/log/{referral_id}")
async def explanation(
    request: Request, referral_id: uuid.UUID, signed: AuditorPageDep, session: SessionDep
) -> HTMLResponse:
    explained = await log.explain(session, referral_id)
    return render(request, "explanation.html", {"r": explained})


@router.get("/screenings/{screening_id}/disclosures")
async def disclosures(
    request: Request, screening_id: uuid.UUID, signed: AuditorPageDep, session: SessionDep
) -> HTMLResponse:
    found = await log.disclosures(session, screening_id)
    return render(request, "disclosures.html", {"found": found})


@router.get("/audit")
async def audit_trail(
    request: Request, signed: AuditorPageDep, session: SessionDep
) -> HTMLResponse:
    state = await trail.trail_state(session)
    return render(request, "audit.html", {"state": state, "report": None})


@router.get("/audit/verify")
async def verify(
    request: Request, signed: AuditorPageDep, session: SessionDep, settings: SettingsDep
) -> HTMLResponse:
    """A button on the trail's page: verify the chain now (recorded as audit.verified)."""
    report = await trail.verify_now(session, settings, signed.principal)
    state = await trail.trail_state(session)
    return render(request, "audit.html", {"state": state, "report": report})
