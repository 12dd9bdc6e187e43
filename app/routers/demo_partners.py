"""The demo partners' inbox over HTTP (development only; see app/partners/demo_inbox.py).

``POST /demo/partners/{id}/inbox`` is what a partner endpoint looks like: no API key, the
Standard Webhooks signature is the authentication. ``GET`` lists what arrived (admin key).
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, Request

from app.deps import AdminDep, SessionDep, SettingsDep
from app.errors import Unauthorized
from app.models import PartnerRow
from app.models.base import utcnow
from app.partners import service
from app.partners.demo_inbox import DemoInbox, SignatureInvalid, verify_delivery
from app.settings import Environment, Settings

router = APIRouter(prefix="/demo/partners", tags=["demo partners (development only)"])
log = structlog.get_logger("ruta.demo_inbox")


def _inbox(request: Request) -> DemoInbox:
    inbox: DemoInbox = request.app.state.demo_inbox
    return inbox


@router.post(
    "/{partner_id}/inbox",
    summary="A demo partner's webhook endpoint",
    responses={401: {"description": "The signature does not verify"}},
)
async def receive(
    partner_id: str, request: Request, session: SessionDep, settings: SettingsDep
) -> dict[str, Any]:
    body = await request.body()
    headers = {k: v for k, v in request.headers.items() if k.startswith("webhook-")}
    row = await session.get(PartnerRow, partner_id)
    secrets = service.signing_secrets(settings, row, utcnow()) if row is not None else []
    try:
        payload = verify_delivery(secrets, body, headers)
    except SignatureInvalid:
        # The same answer for an unknown partner and a bad signature.
        log.warning("demo_delivery_rejected", partner_id=partner_id)
        raise Unauthorized("The webhook signature does not verify.") from None
    stored = _inbox(request).receive(partner_id, headers["webhook-id"], payload, utcnow())
    return {"received": True, "duplicate": not stored}


@router.get("/{partner_id}/inbox", summary="What a demo partner received (newest last)")
async def list_inbox(partner_id: str, request: Request, _admin: AdminDep) -> dict[str, Any]:
    items = _inbox(request).for_partner(partner_id)
    return {"partner_id": partner_id, "items": items}


def install(app: FastAPI, settings: Settings) -> bool:
    """Mount the demo inbox in development mode only; returns whether it was mounted."""
    if settings.env is not Environment.development:
        return False
    app.state.demo_inbox = DemoInbox()
    app.include_router(router)
    return True
