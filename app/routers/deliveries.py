from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from sqlalchemy import select

from app import audit
from app.audit import Action
from app.deps import AdminDep, SessionDep
from app.errors import Conflict, NotFound
from app.models import Delivery, DeliveryAttempt, Referral
from app.models.base import utcnow
from app.openapi import responses
from app.referrals.state import ReferralStatus

router = APIRouter(prefix="/v1/deliveries", tags=["deliveries"], responses=responses(404, 409))


def _view(delivery: Delivery) -> dict[str, Any]:
    return {
        "id": str(delivery.id),
        "webhook_id": delivery.webhook_id,
        "referral_id": str(delivery.referral_id),
        "partner_id": delivery.partner_id,
        "event_type": delivery.event_type,
        "status": delivery.status,
        "attempts": delivery.attempt_count,
        "replays": delivery.replays,
        "last_error": delivery.last_error,
        "needs_human": delivery.needs_human,
        "created_at": delivery.created_at.isoformat(),
        "finished_at": delivery.finished_at.isoformat() if delivery.finished_at else None,
    }


@router.get(
    "/dead-letters",
    summary="Deliveries that exhausted their retries, for a person to act on",
)
async def dead_letters(
    _admin: AdminDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    rows = (
        await session.execute(
            select(Delivery)
            .where(Delivery.status == "dead")
            .order_by(Delivery.finished_at.desc())
            .limit(limit)
        )
    ).scalars()
    return {"items": [_view(d) for d in rows]}


@router.get("/{delivery_id}", summary="A delivery and every attempt")
async def get_delivery(
    delivery_id: uuid.UUID, _admin: AdminDep, session: SessionDep
) -> dict[str, Any]:
    delivery = await session.get(Delivery, delivery_id)
    if delivery is None:
        raise NotFound("No delivery with this id.")
    attempts = (
        await session.execute(
            select(DeliveryAttempt)
            .where(DeliveryAttempt.delivery_id == delivery.id)
            .order_by(DeliveryAttempt.attempt_no)
        )
    ).scalars()
    return {
        **_view(delivery),
        "attempt_log": [
            {
                "attempt": a.attempt_no,
                "started_at": a.started_at.isoformat(),
                "latency_ms": a.latency_ms,
                "status_code": a.status_code,
                "outcome": a.outcome,
                "error": a.error,
                "response_excerpt": a.response_excerpt,
            }
            for a in attempts
        ],
    }


@router.post(
    "/{delivery_id}/replay",
    summary="Replay a dead letter with the same webhook-id and the same bytes",
    description="The delivery goes back in the queue unchanged (partners deduplicate on "
    "`webhook-id`). Every replay is recorded in the audit trail.",
)
async def replay(
    delivery_id: uuid.UUID, admin: AdminDep, session: SessionDep, request: Request
) -> dict[str, Any]:
    delivery = await session.get(Delivery, delivery_id)
    if delivery is None:
        raise NotFound("No delivery with this id.")
    if delivery.status != "dead":
        raise Conflict("Only dead letters can be replayed.", current_status=delivery.status)
    now = utcnow()
    delivery.status = "pending"
    delivery.needs_human = False
    delivery.next_attempt_at = now
    delivery.finished_at = None
    delivery.attempt_count = 0
    delivery.replays += 1
    referral = await session.get(Referral, delivery.referral_id)
    if referral is not None and referral.status == ReferralStatus.undeliverable.value:
        referral.status = ReferralStatus.queued.value
        referral.needs_human = False
        referral.human_reason = None
        referral.closed_at = None
        referral.updated_at = now
    await audit.record(
        session,
        action=Action.dead_letter_replayed,
        actor=admin,
        referral_id=delivery.referral_id,
        partner_id=delivery.partner_id,
        request_id=request.state.request_id,
        data={"delivery_id": str(delivery.id), "attempt": delivery.replays, "reason": "admin"},
    )
    return _view(delivery)
