"""The demo partners' inbox over HTTP (development only; see app/partners/demo_inbox.py).

``POST /demo/partners/{id}/inbox`` is what a partner endpoint looks like: no API key, the
Standard Webhooks signature is the authentication. ``GET`` lists what arrived (admin key).
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel, Field

from app.deps import AdminDep, SessionDep, SettingsDep
from app.errors import Unauthorized
from app.models import PartnerRow
from app.models.base import utcnow
from app.openapi import Timestamp, ok, problem
from app.partners import service
from app.partners.demo_inbox import DemoInbox, SignatureInvalid, verify_delivery
from app.schemas import examples
from app.settings import Environment, Settings

router = APIRouter(prefix="/demo/partners", tags=["demo partners (development only)"])
log = structlog.get_logger("ruta.demo_inbox")


def _inbox(request: Request) -> DemoInbox:
    inbox: DemoInbox = request.app.state.demo_inbox
    return inbox


class InboxReceipt(BaseModel):
    received: bool
    duplicate: bool = Field(description="This `webhook-id` had arrived before (a retry).")


class InboxItem(BaseModel):
    partner_id: str
    webhook_id: str
    received_at: Timestamp
    payload: dict[str, Any] = Field(description="The verified body, as the partner got it.")


class Inbox(BaseModel):
    partner_id: str
    items: list[InboxItem]


@router.post(
    "/{partner_id}/inbox",
    summary="A demo partner's webhook endpoint",
    description="Development mode only. What a partner's endpoint does: no API key; the "
    "Standard Webhooks headers (`webhook-id`, `webhook-timestamp`, `webhook-signature`) "
    "are the authentication, verified against the partner's current and overlapping "
    "secrets. A retry with a known `webhook-id` is acknowledged as a duplicate.",
    response_model=InboxReceipt,
    responses={
        **ok(examples.INBOX_RECEIPT, "Verified and stored"),
        401: problem("The signature does not verify (or the partner is unknown)"),
        500: problem("Internal error"),
    },
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


@router.get(
    "/{partner_id}/inbox",
    summary="What a demo partner received (newest last)",
    description="Development mode only, admin key: the verified deliveries a demo partner "
    "received, to see exactly what left Ruta for it (the README walkthrough uses it).",
    response_model=Inbox,
    responses={
        **ok(examples.INBOX, "The demo partner's inbox"),
        401: problem("No valid API key or token"),
        403: problem("Not an admin"),
        500: problem("Internal error"),
    },
)
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
