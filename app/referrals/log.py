"""The referral log as auditors read it: referrals filtered and paged, one referral
explained (the decision's trace, the match, its history and every delivery attempt), and a
screening's disclosures. The API (app/routers/referrals.py) and the console's auditor
pages both show exactly this.

Reads only; runs in the caller's transaction.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import Action
from app.errors import BadRequest, NotFound
from app.models import (
    AuditEvent,
    Decision,
    Delivery,
    DeliveryAttempt,
    Referral,
    ReferralEvent,
    Screening,
)
from app.models.base import matches
from app.referrals.views import partner_names, referral_view
from app.schemas.screening import aware_utc


@dataclass(frozen=True, slots=True)
class LogFilter:
    status: str | None = None
    service: str | None = None
    urgency: str | None = None
    partner_id: str | None = None
    region: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None


def _encode(referral: Referral | Row[Any]) -> str:
    raw = f"{referral.created_at.isoformat()}|{referral.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The cursor's position; 400 for anything :func:`_encode` did not write, including a
    naive time or a bare date (which cannot be compared with the stored UTC times)."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        moment, ident = base64.urlsafe_b64decode(padded).decode().split("|")
        return aware_utc(datetime.fromisoformat(moment)), uuid.UUID(ident)
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors too
        raise BadRequest("The cursor is not valid.") from None


#: What a list item shows (:func:`app.referrals.views.referral_view`, plus three).
_LISTED = (
    Referral.id,
    Referral.screening_id,
    Referral.created_at,
    Referral.region,
    Referral.service,
    Referral.recipient,
    Referral.urgency,
    Referral.legal_basis,
    Referral.identifying,
    Referral.flags,
    Referral.status,
    Referral.partner_id,
    Referral.deadline_at,
    Referral.needs_human,
    Referral.human_reason,
    Referral.data_categories,
    Referral.reasons,
)


def log_query(filters: LogFilter, cursor: str | None, limit: int) -> Select[Any]:
    """The statement of one page: each filter is an equality (:func:`matches`, for its
    ``hashtext`` index on PostgreSQL) or a range on a real column, and a later page is a
    keyset range on ``(created_at, id)``, the page order. Every filter's index continues
    with ``created_at`` (migrations 0011 and 0017), so no page reads the rows before it;
    rows that share a ``created_at`` are put in ``id`` order as they are read.
    Only the columns a list item shows are read (not the match, the largest), as plain
    rows: the ORM's identity map and instance state cost a page more than its SQL."""
    query = select(*_LISTED)
    for column, value in (
        (Referral.status, filters.status),
        (Referral.service, filters.service),
        (Referral.urgency, filters.urgency),
        (Referral.partner_id, filters.partner_id),
        (Referral.region, filters.region),
    ):
        if value is not None:
            query = query.where(matches(column, value))
    if filters.created_from is not None:
        query = query.where(Referral.created_at >= filters.created_from)
    if filters.created_to is not None:
        query = query.where(Referral.created_at < filters.created_to)
    if cursor:
        moment, ident = _decode(cursor)
        # A row comparison, which both engines read as an index range; the equivalent
        # ``created_at < m OR (created_at = m AND id < i)`` is a filter PostgreSQL applies
        # to every newer row first, so a later page cost as much as an OFFSET.
        query = query.where(tuple_(Referral.created_at, Referral.id) < (moment, ident))
    return query.order_by(Referral.created_at.desc(), Referral.id.desc()).limit(limit + 1)


async def list_referrals(
    session: AsyncSession, filters: LogFilter, *, cursor: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of referrals, newest first, and the cursor of the next page (if any)."""
    rows = list((await session.execute(log_query(filters, cursor, limit))).all())
    page = rows[:limit]
    names = await partner_names(session, {r.partner_id for r in page if r.partner_id})
    items = [
        {
            **referral_view(r, names),
            "screening_id": str(r.screening_id),
            "created_at": r.created_at.isoformat(),
            "region": r.region,
        }
        for r in page
    ]
    return items, (_encode(page[-1]) if len(rows) > limit else None)


async def explain(session: AsyncSession, referral_id: uuid.UUID) -> dict[str, Any]:
    """One referral explained; 404 for an unknown id."""
    referral = await session.get(Referral, referral_id)
    if referral is None:
        raise NotFound("No referral with this id.")
    decision = await session.get(Decision, referral.decision_id)
    assert decision is not None
    history = (
        await session.execute(
            select(ReferralEvent)
            .where(ReferralEvent.referral_id == referral.id)
            .order_by(ReferralEvent.id)
        )
    ).scalars()
    deliveries = list(
        (
            await session.execute(
                select(Delivery)
                .where(Delivery.referral_id == referral.id)
                .order_by(Delivery.created_at)
            )
        ).scalars()
    )
    attempts = list(
        (
            await session.execute(
                select(DeliveryAttempt)
                .where(DeliveryAttempt.delivery_id.in_([d.id for d in deliveries]))
                .order_by(DeliveryAttempt.id)
            )
        ).scalars()
    )
    names = await partner_names(
        session,
        {p for p in [referral.partner_id, *referral.tried_partner_ids] if p}
        | {d.partner_id for d in deliveries},
    )
    return {
        **referral_view(referral, names),
        "screening_id": str(referral.screening_id),
        "created_at": referral.created_at.isoformat(),
        "tried_partners": list(referral.tried_partner_ids),
        "decision": {
            "id": str(decision.id),
            "rule_set": {"version": decision.rule_set_version, "sha256": decision.rule_set_hash},
            "trace": decision.trace,
        },
        "match": referral.match,
        "history": [
            {
                "at": e.at.isoformat(),
                "from": e.from_status,
                "to": e.to_status,
                "reason": e.reason,
                "partner_id": e.partner_id,
                "actor_role": e.actor_role,
            }
            for e in history
        ],
        "deliveries": [
            {
                "id": str(d.id),
                "webhook_id": d.webhook_id,
                "partner_id": d.partner_id,
                "event_type": d.event_type,
                "status": d.status,
                "body_sha256": d.body_sha256,
                "replays": d.replays,
                "attempts": [
                    {
                        "attempt": a.attempt_no,
                        "started_at": a.started_at.isoformat(),
                        "latency_ms": a.latency_ms,
                        "status_code": a.status_code,
                        "outcome": a.outcome,
                        "error": a.error,
                    }
                    for a in attempts
                    if a.delivery_id == d.id
                ],
            }
            for d in deliveries
        ],
    }


async def disclosures(session: AsyncSession, screening_id: uuid.UUID) -> dict[str, Any]:
    """Who received or read which data of one screening, from the audit trail, oldest
    first; 404 for an unknown screening."""
    if await session.get(Screening, screening_id) is None:
        raise NotFound("No screening with this id.")
    events = list(
        (
            await session.execute(
                select(AuditEvent)
                .where(
                    AuditEvent.screening_id == screening_id,
                    AuditEvent.action.in_(
                        [Action.referral_forwarded.value, Action.personal_data_read.value]
                    ),
                )
                .order_by(AuditEvent.seq)
            )
        ).scalars()
    )
    names = await partner_names(session, {e.partner_id for e in events if e.partner_id})
    return {
        "screening_id": str(screening_id),
        "disclosures": [
            {
                "seq": e.seq,
                "at": e.occurred_at.isoformat(),
                "kind": "forwarded" if e.action == Action.referral_forwarded.value else "read",
                "recipient": (
                    {"partner_id": e.partner_id, "name": names.get(e.partner_id, "")}
                    if e.partner_id
                    else {"actor_role": e.actor_role, "actor_id": e.actor_id}
                ),
                "referral_id": str(e.referral_id) if e.referral_id else None,
                "categories": e.data.get("fields_shared") or e.data.get("categories") or [],
                "fields": e.data.get("fields", []),
                "legal_basis": e.data.get("legal_basis"),
                "purpose": e.data.get("purpose"),
            }
            for e in events
        ],
    }
