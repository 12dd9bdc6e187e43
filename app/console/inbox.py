"""The partner's pages: the inbox, one referral (its details, and what to report next),
and capacity. The same services as the API: the state machine, fallback and audit of
``POST /v1/referrals/{id}/status``, the disclosure of ``GET /v1/referrals/{id}/details``,
and ``PATCH /v1/partners/me/capacity``."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, Response

from app.console.deps import PartnerPageDep
from app.console.web import PREFIX, ConsoleRoute, redirect, render
from app.deps import SessionDep, SettingsDep
from app.errors import ValidationFailed, field_error
from app.models.base import utcnow
from app.partners.service import organisation_partners, report_capacity
from app.referrals import inbox as partner_inbox
from app.referrals import service
from app.referrals.state import PartnerStatus, RejectReason

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)

#: The messages a page may show after a form (by code: nothing the caller wrote is echoed).
DONE = frozenset(
    {"received", "accepted", "rejected", "in-progress", "on-hold", "completed", "failed"}
    | {"cancelled", "capacity"}
)


def _done(value: str | None) -> str | None:
    return value if value in DONE else None


@router.get("/inbox")
async def inbox(
    request: Request,
    signed: PartnerPageDep,
    session: SessionDep,
    done: Annotated[str | None, Query(max_length=32)] = None,
) -> HTMLResponse:
    found = await partner_inbox.inbox(session, signed.principal)
    now = utcnow()
    return render(
        request,
        "inbox.html",
        {
            "inbox": found,
            "now": now,
            "time_left": lambda r: partner_inbox.time_left(r, now),
            "done": _done(done),
        },
    )


@router.get("/referrals/{referral_id}")
async def referral(
    request: Request,
    referral_id: uuid.UUID,
    signed: PartnerPageDep,
    session: SessionDep,
    settings: SettingsDep,
    done: Annotated[str | None, Query(max_length=32)] = None,
) -> HTMLResponse:
    opened = await partner_inbox.open_referral(
        session, settings, signed.principal, referral_id, request_id=request.state.request_id
    )
    now = utcnow()
    return render(
        request,
        "referral.html",
        {
            "opened": opened,
            "left": partner_inbox.time_left(opened.referral, now),
            "reject_reasons": list(RejectReason),
            "done": _done(done),
        },
    )


@router.post("/referrals/{referral_id}/status")
async def report(
    referral_id: uuid.UUID,
    signed: PartnerPageDep,
    session: SessionDep,
    settings: SettingsDep,
    status: Annotated[PartnerStatus, Form()],
    reason: Annotated[str, Form(max_length=32)] = "",
) -> Response:
    """Report a status, exactly as ``POST /v1/referrals/{id}/status`` does."""
    try:
        why = RejectReason(reason) if reason else None
    except ValueError:
        raise ValidationFailed([field_error(("reason",), "not a reject reason", "enum")]) from None
    await service.report_status(
        session, settings, signed.principal, referral_id, status, why, now=utcnow()
    )
    if status is PartnerStatus.rejected:
        # It belongs to another partner now (or to a coordinator): back to the inbox.
        return redirect(f"{PREFIX}/inbox?done=rejected")
    return redirect(f"{PREFIX}/referrals/{referral_id}?done={status.value}")


@router.get("/capacity")
async def capacity(
    request: Request,
    signed: PartnerPageDep,
    session: SessionDep,
    done: Annotated[str | None, Query(max_length=32)] = None,
) -> HTMLResponse:
    assert signed.principal.organisation is not None
    partners = await organisation_partners(session, signed.principal.organisation)
    return render(request, "capacity.html", {"partners": partners, "done": _done(done)})


@router.post("/capacity")
async def update_capacity(
    signed: PartnerPageDep,
    session: SessionDep,
    partner_id: Annotated[str, Form(min_length=1, max_length=64)],
    available: Annotated[int, Form(ge=0, le=100_000)],
) -> Response:
    """As ``PATCH /v1/partners/me/capacity``: one of the organisation's own partners."""
    await report_capacity(
        session, signed.principal, available=available, partner_id=partner_id, now=utcnow()
    )
    return redirect(f"{PREFIX}/capacity?done=capacity")
