"""The delivery worker: claim due deliveries, send them signed, record every attempt.

It runs as a task inside the API process for the embedded default, and as its own process
(``ruta worker``) in production, as many as needed: leases keep them off each other's work.
Each delivery goes through three short transactions: the claim (lease), nothing during the
HTTP call, then the outcome (attempt row, delivery state, referral state, circuit breaker,
audit event) in one commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import structlog
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import audit
from app.audit import Action
from app.delivery import outbox, policy, sender, signing
from app.delivery.policy import Outcome
from app.metrics import DELIVERY_ATTEMPTS, DELIVERY_LATENCY, child
from app.models import Delivery, DeliveryAttempt, PartnerCircuit, PartnerRow, Referral
from app.models.base import utcnow
from app.observability import log_on_commit
from app.partners import fhir
from app.partners.minimiser import NOTIFICATION_CATEGORIES
from app.partners.service import signing_secrets
from app.referrals import routing as referrals
from app.settings import Settings

log = structlog.get_logger("ruta.delivery")
ACTOR = audit.system("delivery-worker")

#: Consecutive failures that open a partner's circuit, and the probe interval bounds.
FAILURES_TO_OPEN = 5
PROBE_MIN_SECONDS = 30
PROBE_MAX_SECONDS = 600
#: The attempt outcome of a message for a console-only partner: in its inbox, not posted.
INBOX = "inbox"
#: A paused partner's deliveries wait, without using up attempts.
PAUSED_RECHECK = timedelta(minutes=1)


def default_worker_id() -> str:
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:6]}".lower()


class DeliveryWorker:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        *,
        worker_id: str | None = None,
        config: outbox.ClaimConfig | None = None,
        poll_seconds: float | None = None,
        clock: Callable[[], datetime] = utcnow,
        client: httpx.AsyncClient | None = None,
        concurrency: int = 10,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.settings = settings
        self.worker_id = worker_id or default_worker_id()
        self.config = config or outbox.ClaimConfig(lease_seconds=settings.delivery_lease_seconds)
        self.poll_seconds = poll_seconds or settings.worker_poll_seconds
        self.clock = clock
        self._client = client
        self.concurrency = concurrency
        self._semaphore = asyncio.Semaphore(concurrency)
        self._last_housekeeping: datetime | None = None
        self.wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set; a failing round is logged and retried, never fatal.

        When idle it sleeps until the poll interval passes or new work is announced: by a
        commit in this process, or by PostgreSQL ``NOTIFY`` from any process.
        """
        owned = self._client is None
        self._client = self._client or sender.new_client()
        outbox.register_wake(self.wake)
        close_listener = await self._listen()
        # Deliveries run as tasks, and the worker claims again as soon as one finishes (not
        # when a whole batch has): an emergency waits for one free slot, not for the
        # slowest delivery of a round.
        in_flight: set[asyncio.Task[None]] = set()
        slot_freed = asyncio.Event()

        def finished(task: asyncio.Task[None]) -> None:
            in_flight.discard(task)
            slot_freed.set()

        try:
            while not stop.is_set():
                # Cleared before the claim: work announced during it is not lost.
                self.wake.clear()
                slot_freed.clear()
                free = self.concurrency - len(in_flight)
                claimed = 0
                if free > 0:
                    try:
                        ids = await self._claim(limit=free)
                        claimed = len(ids)
                        for delivery_id in ids:
                            task = asyncio.create_task(self._guarded(delivery_id))
                            in_flight.add(task)
                            task.add_done_callback(finished)
                        await self.housekeeping()
                    except Exception as exc:
                        log.error("worker_round_failed", error_type=type(exc).__name__)
                if free > 0 and claimed < free:
                    # Nothing more is claimable: sleep until work is announced, a delivery
                    # finishes (its partner may have room again), or the poll interval.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            _first(stop.wait(), self.wake.wait(), slot_freed.wait()),
                            self.poll_seconds,
                        )
                else:
                    # Every slot is busy (or was just filled): claim again when one frees.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            _first(stop.wait(), slot_freed.wait()), self.poll_seconds
                        )
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)
        except asyncio.CancelledError:
            # Cancelled rather than stopped: what was in flight is dropped, and its leases
            # expire so the deliveries are claimed again (same webhook-id, same bytes).
            for task in in_flight:
                task.cancel()
            raise
        finally:
            outbox.unregister_wake(self.wake)
            if close_listener is not None:
                with contextlib.suppress(Exception):
                    await close_listener()
            if owned and self._client is not None:
                await self._client.aclose()
                self._client = None

    async def _listen(self) -> Callable[[], Awaitable[None]] | None:
        """On PostgreSQL, LISTEN for enqueued work on a connection of its own; returns how
        to close it. Any failure leaves the worker polling, as before."""
        bind = self.sessionmaker.kw.get("bind")
        if bind is None or bind.dialect.name != "postgresql":
            return None
        try:
            import asyncpg

            dsn = bind.url.set(drivername="postgresql").render_as_string(hide_password=False)
            connection = await asyncpg.connect(dsn)
            await connection.add_listener(outbox.NOTIFY_CHANNEL, lambda *_args: self.wake.set())
        except Exception as exc:
            log.warning("worker_listen_failed", error_type=type(exc).__name__)
            return None
        close: Callable[[], Awaitable[None]] = connection.close
        return close

    async def _claim(self, *, limit: int) -> list[uuid.UUID]:
        """Lease up to ``limit`` due deliveries (at most the configured batch)."""
        config = dataclasses.replace(self.config, batch=max(1, min(self.config.batch, limit)))
        async with self.sessionmaker() as session:
            claimed = await outbox.claim(
                session, worker_id=self.worker_id, now=self.clock(), config=config
            )
            ids = [d.id for d in claimed]
            await session.commit()
        return ids

    async def run_once(self) -> int:
        """Claim one batch and deliver it; return how many deliveries were handled."""
        ids = await self._claim(limit=self.config.batch)
        if ids:
            await asyncio.gather(*(self._guarded(i) for i in ids))
        return len(ids)

    async def _guarded(self, delivery_id: uuid.UUID) -> None:
        async with self._semaphore:
            try:
                await self.deliver(delivery_id)
            except Exception as exc:
                # The lease expires and the delivery is claimed again: nothing is lost.
                log.error(
                    "delivery_failed_internally",
                    delivery_id=str(delivery_id),
                    error_type=type(exc).__name__,
                )

    async def deliver(self, delivery_id: uuid.UUID) -> None:
        client = self._client or sender.new_client()
        now = self.clock()
        async with self.sessionmaker() as session:
            delivery = await session.get(Delivery, delivery_id)
            if delivery is None or delivery.status != outbox.PENDING:
                return
            if delivery.lease_owner != self.worker_id:
                return
            partner = await session.get(PartnerRow, delivery.partner_id)
            body = await outbox.body_of(session, self.settings, delivery)
            if body is None or partner is None:
                reason = "subject_erased" if body is None else "partner_missing"
                await self._finish_dead(session, delivery, reason=reason, now=now)
                await session.commit()
                return
            if partner.status != "active":
                delivery.next_attempt_at = now + PAUSED_RECHECK
                delivery.lease_owner = None
                delivery.lease_expires_at = None
                await session.commit()
                return
            url = partner.endpoint_url
            if url is None:
                await self._into_inbox(session, delivery, now=now)
                await session.commit()
                return
            headers = signing.headers(
                webhook_id=delivery.webhook_id,
                body=body,
                secrets=signing_secrets(self.settings, partner, now),
                timestamp=now,
            )
            headers["x-request-id"] = delivery.request_id or delivery.webhook_id
            if fhir.is_fhir(body):
                headers["content-type"] = fhir.CONTENT_TYPE
            partner_id = partner.id
            await session.commit()

        sent = await sender.post(client, url, body, headers, relaxed=self.settings.relaxed_network)
        child(DELIVERY_LATENCY, partner_id).observe(sent.latency_ms / 1000)
        async with self.sessionmaker() as session:
            await self._record(session, delivery_id, sent, started=now)
            await session.commit()
        if self._client is None:
            await client.aclose()

    async def _record(
        self,
        session: AsyncSession,
        delivery_id: uuid.UUID,
        sent: sender.Sent,
        *,
        started: datetime,
    ) -> None:
        postgres = session.get_bind().dialect.name == "postgresql"
        delivery = await session.get(Delivery, delivery_id, with_for_update=postgres)
        assert delivery is not None
        now = self.clock()
        attempt_no = delivery.attempt_count + 1
        result = sent.result
        refused = (result.error or "").startswith("refused_destination")
        outcome = Outcome.rejected if refused else policy.classify(result)
        delay = policy.next_delay(attempt_no, result) if outcome is Outcome.retry else None
        if outcome is Outcome.retry and delay is None:
            outcome = Outcome.dead
        still_ours = delivery.status == outbox.PENDING
        attempted = self._attempted(
            session,
            delivery,
            started=started,
            outcome=outcome.value,
            status_code=result.status_code,
            latency_ms=sent.latency_ms,
            error=(result.error or None) and str(result.error)[:200],
            excerpt=sent.excerpt,
            audit_data={
                **({"reason": _code(result.error)} if result.error else {}),
                **({"due_at": _stamp(now + timedelta(seconds=delay))} if delay is not None else {}),
            },
        )
        _log_attempt(session, delivery, outcome, result, now=now, delay=delay)
        await self._circuit(session, delivery.partner_id, outcome, now=now)
        referral, current = (
            await _held_referral(session, delivery, postgres=postgres)
            if still_ours
            else (None, False)
        )
        if not (still_ours and current and outcome is Outcome.delivered):
            # The one attempt that delivers the referral to its partner is recorded in
            # that referral's ``referral.forwarded`` event (attempt, http_status) instead.
            await _audit_attempt(session, attempted)
        if not still_ours:
            return  # cancelled meanwhile (fallback, revocation) or finished by another worker
        match outcome:
            case Outcome.delivered:
                await self._delivered(
                    session,
                    delivery,
                    referral if current else None,
                    now=now,
                    http_status=result.status_code,
                )
            case Outcome.retry:
                assert delay is not None
                delivery.next_attempt_at = now + timedelta(seconds=delay)
                delivery.last_error = _code(result.error) or f"http_{result.status_code}"
            case Outcome.rejected | Outcome.gone:
                await self._refused(
                    session, delivery, referral if current else None, outcome, result, now=now
                )
            case Outcome.dead:
                await self._finish_dead(
                    session,
                    delivery,
                    reason=_code(result.error) or "retries_exhausted",
                    now=now,
                )

    async def _refused(
        self,
        session: AsyncSession,
        delivery: Delivery,
        referral: Referral | None,
        outcome: Outcome,
        result: policy.Result,
        *,
        now: datetime,
    ) -> None:
        """The partner will not take it (410: it is gone, and paused); ``referral``, if it
        is the one this partner holds, moves on to the next eligible partner."""
        gone = outcome is Outcome.gone
        delivery.status = "rejected"
        delivery.finished_at = now
        delivery.last_error = (
            "endpoint_gone" if gone else _code(result.error) or f"http_{result.status_code}"
        )
        if gone:
            await self._pause_partner(session, delivery.partner_id, now=now)
        if referral is not None:
            await referrals.fall_back(
                session,
                self.settings,
                referral,
                reason="endpoint_gone" if gone else "delivery_refused",
                now=now,
            )

    def _attempted(
        self,
        session: AsyncSession,
        delivery: Delivery,
        *,
        started: datetime,
        outcome: str,
        status_code: int | None = None,
        latency_ms: int = 0,
        error: str | None = None,
        excerpt: str | None = None,
        audit_data: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Count one attempt on the delivery (releasing its lease): its row and its metric;
        returns its audit event's fields, for ``_audit_attempt`` (the caller records it
        unless the attempt's facts go into the ``referral.forwarded`` event)."""
        delivery.attempt_count += 1
        delivery.lease_owner = None
        delivery.lease_expires_at = None
        session.add(
            DeliveryAttempt(
                delivery_id=delivery.id,
                attempt_no=delivery.attempt_count,
                worker=self.worker_id,
                started_at=started,
                latency_ms=latency_ms,
                status_code=status_code,
                outcome=outcome,
                error=error,
                response_excerpt=excerpt,
            )
        )
        child(DELIVERY_ATTEMPTS, delivery.partner_id, outcome).inc()
        return {
            "referral_id": delivery.referral_id,
            "partner_id": delivery.partner_id,
            "data": {
                "delivery_id": str(delivery.id),
                "attempt": delivery.attempt_count,
                "http_status": status_code,
                "outcome": outcome,
                **(audit_data or {}),
            },
        }

    async def _delivered(
        self,
        session: AsyncSession,
        delivery: Delivery,
        referral: Referral | None,
        *,
        now: datetime,
        http_status: int | None = None,
    ) -> None:
        """The message reached its partner; ``referral`` is the referral it delivers to the
        partner holding it now, if it is one. ``http_status``: the partner's answer, kept in
        the ``referral.forwarded`` event when the attempt was posted."""
        delivery.status = "delivered"
        delivery.finished_at = now
        delivery.last_error = None
        if referral is not None:
            await referrals.mark_delivered(
                session,
                referral,
                delivery_id=delivery.id,
                body_sha256=delivery.body_sha256,
                attempt=delivery.attempt_count,
                http_status=http_status,
                now=now,
            )
        elif delivery.event_type == "notification.created":
            await _notification_sent(session, delivery)

    async def _into_inbox(
        self, session: AsyncSession, delivery: Delivery, *, now: datetime
    ) -> None:
        """A console-only partner (no endpoint): nothing is posted; the message is in the
        partner's console inbox from now on, where reading a referral's details is recorded
        as a disclosure of its own. The attempt is kept (outcome ``inbox``) like any other,
        so the referral moves on to ``delivered`` and its deadline runs as for every
        partner, and a withdrawal later tells this partner too."""
        await _audit_attempt(
            session, self._attempted(session, delivery, started=now, outcome=INBOX)
        )
        referral = (
            await session.get(Referral, delivery.referral_id)
            if delivery.referral_id is not None
            else None
        )
        current = (
            referral is not None
            and delivery.event_type == "referral.created"
            and referral.partner_id == delivery.partner_id
        )
        await self._delivered(session, delivery, referral if current else None, now=now)

    async def _finish_dead(
        self, session: AsyncSession, delivery: Delivery, *, reason: str, now: datetime
    ) -> None:
        delivery.status = "dead"
        delivery.needs_human = True
        delivery.finished_at = now
        delivery.last_error = reason[:200]
        delivery.lease_owner = None
        delivery.lease_expires_at = None
        log_on_commit(
            session,
            log,
            "error",
            "delivery_dead_letter",
            delivery_id=str(delivery.id),
            referral_id=_text(delivery.referral_id),
            partner_id=delivery.partner_id,
            event_type=delivery.event_type,
            attempts=delivery.attempt_count,
            reason=delivery.last_error,
            hint="a person must act: replay it (ruta deliveries replay) once the partner is back",
        )
        referral = (
            await session.get(Referral, delivery.referral_id)
            if delivery.referral_id is not None
            else None
        )
        if (
            referral is not None
            and delivery.event_type == "referral.created"
            and referral.partner_id == delivery.partner_id
            and referral.status in ("queued", "delivered", "received")
        ):
            await referrals.mark_undeliverable(session, referral, reason="dead_letter", now=now)

    async def _pause_partner(
        self, session: AsyncSession, partner_id: str, *, now: datetime
    ) -> None:
        partner = await session.get(PartnerRow, partner_id)
        if partner is None or partner.status == "paused":
            return
        partner.status = "paused"
        partner.updated_at = now
        log_on_commit(
            session, log, "warning", "partner_paused", partner_id=partner_id, reason="endpoint_gone"
        )
        await audit.record(
            session,
            action=Action.partner_disabled,
            actor=ACTOR,
            partner_id=partner_id,
            data={"target_id": partner_id, "reason": "endpoint_gone"},
        )

    async def _circuit(
        self, session: AsyncSession, partner_id: str, outcome: Outcome, *, now: datetime
    ) -> None:
        if outcome not in (Outcome.retry, Outcome.dead) and await _circuit_at_rest(
            session, partner_id
        ):
            # A success on a closed circuit with no failure counted changes nothing, and
            # takes no lock: the partner's deliveries are not recorded one at a time behind
            # its circuit's row. (A failure committed after this read counts as after this
            # success, as it would had the success committed first.)
            return
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        await session.execute(
            insert(PartnerCircuit)
            .values(
                partner_id=partner_id,
                state="closed",
                consecutive_failures=0,
                probe_interval_seconds=PROBE_MIN_SECONDS,
            )
            .on_conflict_do_nothing(index_elements=["partner_id"])
        )
        postgres = session.get_bind().dialect.name == "postgresql"
        circuit = await session.get(
            PartnerCircuit, partner_id, with_for_update=postgres, populate_existing=True
        )
        assert circuit is not None
        if outcome in (Outcome.retry, Outcome.dead):
            circuit.consecutive_failures += 1
            if circuit.state == "open":
                # The probe failed: wait longer before the next one.
                circuit.probe_interval_seconds = min(
                    circuit.probe_interval_seconds * 2, PROBE_MAX_SECONDS
                )
                circuit.next_probe_at = now + timedelta(seconds=circuit.probe_interval_seconds)
            elif circuit.consecutive_failures >= FAILURES_TO_OPEN:
                circuit.state = "open"
                circuit.opened_at = now
                circuit.probe_interval_seconds = PROBE_MIN_SECONDS
                circuit.next_probe_at = now + timedelta(seconds=PROBE_MIN_SECONDS)
                log_on_commit(
                    session,
                    log,
                    "warning",
                    "circuit_opened",
                    partner_id=partner_id,
                    consecutive_failures=circuit.consecutive_failures,
                    next_probe_at=_stamp(circuit.next_probe_at),
                )
        else:
            if circuit.state == "open":
                log_on_commit(
                    session,
                    log,
                    "info",
                    "circuit_closed",
                    partner_id=partner_id,
                    open_seconds=round((now - circuit.opened_at).total_seconds())
                    if circuit.opened_at is not None
                    else None,
                )
            circuit.state = "closed"
            circuit.consecutive_failures = 0
            circuit.probe_interval_seconds = PROBE_MIN_SECONDS
            circuit.next_probe_at = None

    async def housekeeping(self, *, force: bool = False) -> None:
        """Every 30 s: missed response deadlines move on; held referrals try again."""
        now = self.clock()
        if (
            not force
            and self._last_housekeeping is not None
            and now - self._last_housekeeping < timedelta(seconds=30)
        ):
            return
        self._last_housekeeping = now
        async with self.sessionmaker() as session:
            await referrals.sweep_deadlines(session, self.settings, now=now)
            await referrals.retry_held(session, self.settings, now=now)
            await session.commit()


async def _circuit_at_rest(session: AsyncSession, partner_id: str) -> bool:
    """Whether the partner's circuit is closed with no failure counted (as last committed)."""
    circuit = await session.get(PartnerCircuit, partner_id, populate_existing=True)
    return circuit is not None and circuit.state == "closed" and circuit.consecutive_failures == 0


async def _held_referral(
    session: AsyncSession, delivery: Delivery, *, postgres: bool
) -> tuple[Referral | None, bool]:
    """The delivery's referral, and whether the delivery carries it to the partner holding
    it now. Locked (PostgreSQL) and read afresh: a partner's report can commit between the
    send and this record, and the referral's step must follow from its status now, or the
    worker's "delivered" would overwrite the partner's "accepted"."""
    if delivery.referral_id is None:
        return None, False
    referral = await session.get(
        Referral, delivery.referral_id, with_for_update=postgres, populate_existing=True
    )
    current = (
        referral is not None
        and delivery.event_type == "referral.created"
        and referral.partner_id == delivery.partner_id
    )
    return referral, current


async def _audit_attempt(session: AsyncSession, attempted: dict[str, Any]) -> None:
    """The ``referral.attempted`` event of one attempt, from ``_attempted``'s fields."""
    await audit.record(session, action=Action.referral_attempted, actor=ACTOR, **attempted)


async def _notification_sent(session: AsyncSession, delivery: Delivery) -> None:
    """The non-identifying notification reached the directory's notification recipient."""
    await audit.record(
        session,
        action=Action.notification_sent,
        actor=ACTOR,
        screening_id=delivery.screening_id,
        partner_id=delivery.partner_id,
        data={
            "reason": "adult_declined_consent",
            "delivery_id": str(delivery.id),
            "fields_shared": list(NOTIFICATION_CATEGORIES),
        },
    )


def _log_attempt(
    session: AsyncSession,
    delivery: Delivery,
    outcome: Outcome,
    result: policy.Result,
    *,
    now: datetime,
    delay: float | None,
) -> None:
    """The attempt's trace, once its outcome is committed: delivered, or failed (and then
    retried at ``next_attempt_at``, or given up: the dead letter has its own line)."""
    fields = {
        "delivery_id": str(delivery.id),
        "referral_id": _text(delivery.referral_id),
        "partner_id": delivery.partner_id,
        "event_type": delivery.event_type,
        "attempt": delivery.attempt_count,
        "http_status": result.status_code,
    }
    if outcome is Outcome.delivered:
        log_on_commit(session, log, "info", "delivery_delivered", **fields)
        return
    reason = _code(result.error) or f"http_{result.status_code}"
    log_on_commit(
        session, log, "warning", "delivery_attempt_failed", outcome=outcome.value,
        reason=reason, **fields,
    )  # fmt: skip
    if delay is not None:
        log_on_commit(
            session, log, "info", "delivery_retry_scheduled",
            next_attempt_at=_stamp(now + timedelta(seconds=delay)),
            delay_seconds=round(delay, 1), **fields,
        )  # fmt: skip


def _text(value: uuid.UUID | None) -> str | None:
    return str(value) if value is not None else None


async def _first(*waits: object) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]  # type: ignore[call-overload]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def _code(error: str | None) -> str:
    if not error:
        return ""
    return "".join(c if c.isalnum() or c in "_:.-" else "_" for c in error.lower())[:64]


def _stamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
