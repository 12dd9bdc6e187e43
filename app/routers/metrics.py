from __future__ import annotations

import hmac
from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import func, select

from app.delivery import outbox
from app.deps import SettingsDep
from app.errors import NotFound, Unauthorized
from app.metrics import DatabaseState, exposition
from app.models import AuditEvent, Delivery, PartnerCircuit, Referral
from app.models.base import utcnow
from app.openapi import problem
from app.settings import Environment

router = APIRouter(tags=["operations"])


async def scraper(request: Request, settings: SettingsDep) -> None:
    """Who may read the metrics: with RUTA_METRICS_TOKEN set, whoever sends it; without it,
    anyone in development and tests, and nobody in production (the counts per legal
    basis, urgency and rule are not for the public internet).

    The header is read here rather than declared as a security scheme: the document would
    then say every call needs it, which is not so without a token outside production."""
    token = settings.metrics_token
    if token is None:
        if settings.env is Environment.production:
            raise NotFound("Metrics are not served: set RUTA_METRICS_TOKEN to serve them.")
        return
    scheme, _, sent = request.headers.get("authorization", "").partition(" ")
    expected = token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(sent.strip().encode(), expected):
        raise Unauthorized("Send the metrics token as `Authorization: Bearer …`.")


async def _database_state(request: Request, now: datetime) -> DatabaseState:
    """The gauges' values, read from the database at scrape time, so every process and
    replica reports the same."""
    async with request.app.state.sessionmaker() as session:
        backlog, oldest = (
            await session.execute(
                select(func.count(), func.min(Delivery.next_attempt_at)).where(outbox.IS_PENDING)
            )
        ).one()
        if oldest is not None and oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=UTC)
        dead = (
            await session.execute(select(func.count()).select_from(Delivery).where(outbox.IS_DEAD))
        ).scalar_one()
        needing = (
            await session.execute(
                select(func.count()).select_from(Referral).where(Referral.needs_human)
            )
        ).scalar_one()
        circuits = {
            partner_id: state == "open"
            for partner_id, state in (
                await session.execute(select(PartnerCircuit.partner_id, PartnerCircuit.state))
            ).all()
        }
        chain = (
            await session.execute(select(func.coalesce(func.max(AuditEvent.seq), 0)))
        ).scalar_one()
    return DatabaseState(
        outbox_backlog=backlog,
        oldest_due_age_seconds=max(0.0, (now - oldest).total_seconds()) if oldest else 0.0,
        dead_letters=dead,
        referrals_needing_a_person=needing,
        audit_chain_length=chain,
        circuits=circuits,
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics (for operators; no personal data in any label)",
    description="Prometheus text exposition format. With `RUTA_METRICS_TOKEN` set, send it "
    "as `Authorization: Bearer …` (401 otherwise); without it, metrics are open in "
    "development and tests and not served at all in production (404). Request counts and "
    "latency by route template, decisions by service, urgency and legal basis, rules "
    "fired, and gauges read from the database at scrape time (outbox backlog and oldest "
    "due age, dead letters, open circuits, referrals needing a person, audit chain "
    "length), so every replica reports the same values. With several server processes "
    "the counters are every process's, summed.",
    response_class=Response,
    dependencies=[Depends(scraper)],
    responses={
        200: {
            "description": "Prometheus metrics",
            "content": {
                CONTENT_TYPE_LATEST: {
                    "example": "# TYPE ruta_dead_letters gauge\nruta_dead_letters 0.0\n"
                }
            },
        },
        401: problem("The metrics token is missing or wrong"),
        404: problem("Metrics are not served (production without RUTA_METRICS_TOKEN)"),
        500: problem("Internal error (no details are disclosed)"),
    },
)
async def metrics(request: Request) -> Response:
    state = await _database_state(request, utcnow())
    return Response(exposition(state), media_type=CONTENT_TYPE_LATEST)
