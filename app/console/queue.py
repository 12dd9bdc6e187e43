"""The coordinator's pages (admins, docs/console.md): referrals that need a person, and
what to do with each: assign to a chosen partner with a reason, retry, close with a reason.
Every action is a service of app/referrals/coordination.py, audited."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, Response

from app.console.deps import CoordinatorPageDep
from app.console.web import PREFIX, ConsoleRoute, redirect, render
from app.deps import SessionDep, SettingsDep
from app.models.base import utcnow
from app.referrals import coordination
from app.referrals.coordination import AssignReason, CloseReason

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)

DONE = frozenset({"assigned", "matched", "replayed", "no_partner", "closed", "notice_replayed"})


@router.get("/queue")
async def queue(
    request: Request,
    signed: CoordinatorPageDep,
    session: SessionDep,
    done: Annotated[str | None, Query(max_length=32)] = None,
) -> HTMLResponse:
    found = await coordination.queue(session)
    return render(
        request,
        "queue.html",
        {"queue": found, "now": utcnow(), "done": done if done in DONE else None},
    )


@router.get("/queue/{referral_id}")
async def case(
    request: Request,
    referral_id: uuid.UUID,
    signed: CoordinatorPageDep,
    session: SessionDep,
    done: Annotated[str | None, Query(max_length=32)] = None,
) -> HTMLResponse:
    found = await coordination.open_case(session, referral_id)
    return render(
        request,
        "case.html",
        {
            "case": found,
            "now": utcnow(),
            "assign_reasons": list(AssignReason),
            "close_reasons": list(CloseReason),
            "done": done if done in DONE else None,
        },
    )


@router.post("/queue/{referral_id}/assign")
async def assign(
    referral_id: uuid.UUID,
    signed: CoordinatorPageDep,
    session: SessionDep,
    settings: SettingsDep,
    partner_id: Annotated[str, Form(min_length=1, max_length=64)],
    reason: Annotated[AssignReason, Form()],
) -> Response:
    await coordination.assign_to(
        session, settings, signed.principal, referral_id, partner_id, reason, now=utcnow()
    )
    return redirect(f"{PREFIX}/queue/{referral_id}?done=assigned")


@router.post("/queue/{referral_id}/retry")
async def retry(
    referral_id: uuid.UUID, signed: CoordinatorPageDep, session: SessionDep, settings: SettingsDep
) -> Response:
    retried = await coordination.retry(
        session, settings, signed.principal, referral_id, now=utcnow()
    )
    return redirect(f"{PREFIX}/queue/{referral_id}?done={retried.outcome}")


@router.post("/queue/{referral_id}/close")
async def close(
    referral_id: uuid.UUID,
    signed: CoordinatorPageDep,
    session: SessionDep,
    settings: SettingsDep,
    reason: Annotated[CloseReason, Form()],
) -> Response:
    await coordination.close(session, settings, signed.principal, referral_id, reason, now=utcnow())
    return redirect(f"{PREFIX}/queue/{referral_id}?done=closed")


@router.post("/dead-letters/{delivery_id}/replay")
async def replay_notice(
    delivery_id: uuid.UUID, signed: CoordinatorPageDep, session: SessionDep
) -> Response:
    await coordination.replay_notice(session, signed.principal, delivery_id, now=utcnow())
    return redirect(f"{PREFIX}/queue?done=notice_replayed")
