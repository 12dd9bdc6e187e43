from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import select

from app.delivery import outbox
from app.deps import AdminDep, SessionDep
from app.errors import Conflict, NotFound
from app.models import Delivery, DeliveryAttempt
from app.models.base import utcnow
from app.openapi import Timestamp, ok, problem, responses
from app.schemas import examples

router = APIRouter(prefix="/v1/deliveries", tags=["deliveries"], responses=responses(404, 409))


class DeliveryOut(BaseModel):
    id: uuid.UUID
    webhook_id: str = Field(description="Standard Webhooks `webhook-id`: the same on replays.")
    referral_id: uuid.UUID
    partner_id: str
    event_type: str = Field(description="e.g. referral.created, referral.revoked")
    status: str = Field(description="pending, delivered, dead, …")
    attempts: int = Field(description="Attempts since it was queued (or last replayed).")
    replays: int
    last_error: str | None
    needs_human: bool
    created_at: Timestamp
    finished_at: Timestamp | None


class AttemptOut(BaseModel):
    attempt: int
    started_at: Timestamp
    latency_ms: int | None
    status_code: int | None
    outcome: str
    error: str | None
    response_excerpt: str | None = Field(description="The start of the partner's answer.")


class DeliveryDetail(DeliveryOut):
    attempt_log: list[AttemptOut]


class DeadLetters(BaseModel):
    items: list[DeliveryOut]


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
    description="For admins: deliveries whose retries (about 72 h with backoff) ran out or "
    "that a partner refused for good, newest first. Fix the cause (the partner's endpoint, "
    "its secret), then replay each with `POST /v1/deliveries/{id}/replay` or "
    "`ruta deliveries replay --all`.",
    response_model=DeadLetters,
    responses=ok(examples.DEAD_LETTERS, "Dead letters, newest first"),
)
async def dead_letters(
    _admin: AdminDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    rows = (
        await session.execute(
            select(Delivery)
            .where(outbox.IS_DEAD)
            .order_by(Delivery.finished_at.desc())
            .limit(limit)
        )
    ).scalars()
    return {"items": [_view(d) for d in rows]}


@router.get(
    "/{delivery_id}",
    summary="A delivery and every attempt",
    description="For admins: one outbound delivery and its attempt log (HTTP status, "
    "latency, outcome, error code and the start of the partner's answer), to see why a "
    "partner did not receive a referral.",
    response_model=DeliveryDetail,
    responses={
        **ok(examples.DELIVERY_DETAIL, "The delivery and its attempts"),
        404: problem("No delivery with this id"),
    },
)
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
    "`webhook-id`). Every replay is recorded in the audit trail. For admins; a delivery that "
    "is not a dead letter answers 409 with its `current_status`.",
    response_model=DeliveryOut,
    responses={
        **ok(examples.REPLAYED, "Queued again"),
        404: problem("No delivery with this id"),
        409: problem("Only dead letters can be replayed"),
    },
)
async def replay(
    delivery_id: uuid.UUID, admin: AdminDep, session: SessionDep, request: Request
) -> dict[str, Any]:
    delivery = await session.get(Delivery, delivery_id)
    if delivery is None:
        raise NotFound("No delivery with this id.")
    if delivery.status != "dead":
        raise Conflict("Only dead letters can be replayed.", current_status=delivery.status)
    await outbox.replay_dead_letter(
        session, delivery.id, actor=admin, now=utcnow(), request_id=request.state.request_id
    )
    return _view(delivery)
