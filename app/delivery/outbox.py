"""The transactional outbox: enqueue inside the caller's transaction; claim with leases.

Claiming takes a short transaction that leases rows (``lease_owner``, ``lease_expires_at``)
and commits, so no row lock is held across the slow HTTP call. On PostgreSQL concurrent
workers skip each other's rows with ``FOR UPDATE SKIP LOCKED``; on SQLite every transaction
already holds the write lock (``BEGIN IMMEDIATE``). A worker that dies mid-delivery leaves
its lease to expire, and the row is claimed again.

The per-partner in-flight cap holds across workers: a lease is what "in flight" means, and
on PostgreSQL a claimer counts a partner's live leases only while holding that partner's
transaction-scoped advisory lock (taken in partner order, so two claimers cannot deadlock),
which it keeps until its own leases are committed. Two workers claiming for the same
partner at once therefore count one after the other, never both from the same snapshot.

Enqueueing wakes idle workers as soon as the transaction commits, so an emergency does not
wait for the next poll: workers in the same process through an after-commit hook, workers
anywhere through PostgreSQL ``NOTIFY`` sent inside the enqueueing transaction (delivered
only if it commits). Polling stays as the fallback.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Exists, and_, bindparam, event, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app import compact, crypto
from app.errors import Conflict
from app.models import Delivery, PartnerCircuit, Subject
from app.models.delivery import PENDING_SQL
from app.observability import actor_fields, log_on_commit
from app.schemas.decision import Urgency
from app.settings import Settings

log = structlog.get_logger("ruta.delivery")
PENDING = PENDING_SQL
#: ``status = 'pending'`` with the value written into the SQL, not bound: PostgreSQL and
#: SQLite then use the partial indexes whose predicate it is (migration 0012), in a
#: generic plan too.
IS_PENDING = Delivery.status == bindparam("pending_status", PENDING, literal_execute=True)
#: ``status = 'dead'``, the same way (ix_deliveries_dead).
IS_DEAD = Delivery.status == bindparam("dead_status", "dead", literal_execute=True)
TERMINAL = frozenset({"delivered", "rejected", "dead", "cancelled"})


@dataclass(frozen=True, slots=True)
class ClaimConfig:
    lease_seconds: float = 30.0
    batch: int = 20
    #: Deliveries in flight (leased) to one partner at once, across all workers.
    per_partner_cap: int = 4


#: First key of the advisory locks that serialise claims per partner ("RUTA").
ADVISORY_NAMESPACE = 0x52555441
#: The PostgreSQL channel an enqueueing transaction notifies; the payload is the urgency.
NOTIFY_CHANNEL = "ruta_outbox"
_WAKE = "ruta.outbox.wake_on_commit"
_NOTIFIED = "ruta.outbox.notified_in"
#: Wake events of the workers running in this process (see :func:`register_wake`).
_local_wakes: set[asyncio.Event] = set()


def register_wake(wake: asyncio.Event) -> None:
    """Have ``wake`` set whenever a transaction in this process commits new deliveries."""
    _local_wakes.add(wake)


def unregister_wake(wake: asyncio.Event) -> None:
    _local_wakes.discard(wake)


@event.listens_for(Session, "after_commit")
def _wake_local_workers(session: Session) -> None:
    if session.info.pop(_WAKE, False):
        for wake in list(_local_wakes):
            wake.set()


@event.listens_for(Session, "after_rollback")
def _forget_wake(session: Session) -> None:
    session.info.pop(_WAKE, None)


async def announce(session: AsyncSession, urgency: Urgency) -> None:
    """Wake workers when this transaction commits (and only if it does)."""
    session.info[_WAKE] = True
    if session.get_bind().dialect.name != "postgresql":
        return
    transaction = session.sync_session.get_transaction()
    if transaction is not None and session.info.get(_NOTIFIED) is transaction:
        return  # one NOTIFY per transaction is enough to wake the listeners
    session.info[_NOTIFIED] = transaction
    await session.execute(select(func.pg_notify(NOTIFY_CHANNEL, urgency.value)))


async def enqueue(
    session: AsyncSession,
    settings: Settings,
    *,
    referral_id: uuid.UUID,
    partner_id: str,
    subject_id: uuid.UUID,
    event_type: str,
    body: bytes,
    urgency: Urgency,
    now: datetime,
    request_id: str | None = None,
) -> Delivery:
    """Write a delivery in the caller's transaction. The body is encrypted under the
    subject's data key, so erasing the subject also makes queued bodies unreadable."""
    delivery = Delivery(
        **delivery_row(
            await subject_key(session, settings, subject_id),
            referral_id=referral_id,
            partner_id=partner_id,
            subject_id=subject_id,
            event_type=event_type,
            body=body,
            urgency=urgency,
            now=now,
            request_id=request_id,
        )
    )
    session.add(delivery)
    await announce(session, urgency)
    return delivery


async def subject_key(session: AsyncSession, settings: Settings, subject_id: uuid.UUID) -> bytes:
    """The subject's plaintext data key (the subject must not be erased)."""
    subject = await session.get(Subject, subject_id)
    assert subject is not None
    assert subject.wrapped_dek is not None, "cannot forward for an erased subject"
    return crypto.unwrap_with_any(
        settings.keks_by_id(), subject.wrapped_dek, subject.id, subject.kek_id
    )


def delivery_row(
    dek: bytes,
    *,
    referral_id: uuid.UUID | None,
    partner_id: str,
    subject_id: uuid.UUID,
    event_type: str,
    body: bytes,
    urgency: Urgency,
    now: datetime,
    request_id: str | None,
    screening_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    """A new outbox row's columns, the body encrypted under ``dek``. Intake writes all of a
    screening's rows in one INSERT, then calls :func:`announce`. A notification has no
    referral; it names its screening instead. No ``webhook_id`` is stored: it is derived
    from the row's id (:attr:`app.models.Delivery.webhook_id`)."""
    delivery_id = uuid.uuid4()
    return {
        "id": delivery_id,
        "referral_id": referral_id,
        "screening_id": screening_id,
        "partner_id": partner_id,
        "subject_id": subject_id,
        "event_type": event_type,
        "urgency_rank": urgency.rank,
        # Compressed before encryption (ciphertext does not compress); see app.compact.
        "body_ct": crypto.encrypt_field(
            dek, compact.pack(body), table="deliveries", column="body_ct", row_id=delivery_id
        ),
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "status": PENDING,
        "attempt_count": 0,
        "next_attempt_at": now,
        "lease_owner": None,
        "lease_expires_at": None,
        "last_error": None,
        "needs_human": False,
        "replays": 0,
        "request_id": request_id,
        "created_at": now,
        "finished_at": None,
    }


async def body_of(session: AsyncSession, settings: Settings, delivery: Delivery) -> bytes | None:
    """The exact bytes to send, or None when the subject was erased."""
    subject = await session.get(Subject, delivery.subject_id)
    if subject is None or subject.wrapped_dek is None:
        return None
    dek = crypto.unwrap_with_any(
        settings.keks_by_id(), subject.wrapped_dek, subject.id, subject.kek_id
    )
    return compact.body_bytes(
        crypto.decrypt_field(
            dek, delivery.body_ct, table="deliveries", column="body_ct", row_id=delivery.id
        )
    )


async def claim(
    session: AsyncSession, *, worker_id: str, now: datetime, config: ClaimConfig
) -> list[Delivery]:
    """Lease up to ``config.batch`` due deliveries: emergencies first, then the oldest due.

    A partner whose circuit is open gets at most one delivery (the probe) per probe
    interval; a partner with ``per_partner_cap`` live leases (any worker's) gets no more.
    The caller commits; on PostgreSQL that also releases the partners' advisory locks.
    """
    postgres = session.get_bind().dialect.name == "postgresql"
    circuit = PartnerCircuit
    query = (
        select(Delivery)
        .where(
            IS_PENDING,
            Delivery.next_attempt_at <= now,
            or_(Delivery.lease_expires_at.is_(None), Delivery.lease_expires_at < now),
            ~_circuit_holds(now),
        )
        # ix_deliveries_claim's order (migration 0018): the claim reads the rows it takes.
        .order_by(Delivery.urgency_rank.desc(), Delivery.next_attempt_at, Delivery.created_at)
        .limit(config.batch * 3)
    )
    if postgres:
        query = query.with_for_update(of=Delivery, skip_locked=True)
    candidates = list((await session.execute(query)).scalars())
    if not candidates:
        return []
    partners = sorted({d.partner_id for d in candidates})
    if postgres:
        # Held until this transaction ends, i.e. until the leases below are committed, so
        # the next claimer for these partners counts them. In partner order: no deadlock.
        for partner_id in partners:
            await session.execute(
                select(func.pg_advisory_xact_lock(ADVISORY_NAMESPACE, func.hashtext(partner_id)))
            )
    # Counted after the locks: each statement sees everything committed before it began.
    in_flight = dict(
        (
            await session.execute(
                select(Delivery.partner_id, func.count())
                .where(
                    IS_PENDING,
                    Delivery.lease_expires_at >= now,
                    Delivery.partner_id.in_(partners),
                )
                .group_by(Delivery.partner_id)
            )
        ).all()
    )
    open_partners = set(
        (
            await session.execute(
                select(circuit.partner_id).where(
                    circuit.state == "open",
                    circuit.partner_id.in_(partners),
                )
            )
        ).scalars()
    )
    chosen: list[Delivery] = []
    probed: set[str] = set()
    for delivery in candidates:
        if len(chosen) >= config.batch:
            break
        partner = delivery.partner_id
        if partner in open_partners:
            if partner in probed or not await _take_probe(session, partner, now):
                continue
            probed.add(partner)
        elif in_flight.get(partner, 0) >= config.per_partner_cap:
            continue
        in_flight[partner] = in_flight.get(partner, 0) + 1
        chosen.append(delivery)
    lease_until = now + timedelta(seconds=config.lease_seconds)
    for delivery in chosen:
        delivery.lease_owner = worker_id
        delivery.lease_expires_at = lease_until
    await session.flush()
    return chosen


def _circuit_holds(now: datetime) -> Exists:
    """The delivery's partner has a circuit that holds it back: neither closed nor open
    with its probe due. Written as NOT EXISTS rather than an outer join, so the planner
    counts the few held partners as few and reads the claim index in order (an outer
    join's condition on the circuit's NULL columns was estimated to keep about 1% of the
    rows, which priced a sort of the whole backlog below reading the index in order)."""
    circuit = PartnerCircuit
    return (
        select(circuit.partner_id)
        .where(
            circuit.partner_id == Delivery.partner_id,
            circuit.state != "closed",
            ~and_(
                circuit.state == "open",
                circuit.next_probe_at.is_not(None),
                circuit.next_probe_at <= now,
            ),
        )
        .exists()
    )


async def _take_probe(session: AsyncSession, partner_id: str, now: datetime) -> bool:
    """Atomically take the one probe an open circuit allows per interval."""
    row = await session.get(PartnerCircuit, partner_id)
    assert row is not None
    result = await session.execute(
        update(PartnerCircuit)
        .where(
            PartnerCircuit.partner_id == partner_id,
            PartnerCircuit.state == "open",
            PartnerCircuit.next_probe_at <= now,
        )
        .values(next_probe_at=now + timedelta(seconds=row.probe_interval_seconds))
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


async def cancel_pending(session: AsyncSession, referral_id: uuid.UUID, *, now: datetime) -> int:
    """Cancel a referral's undelivered messages (it moved to another partner, or was
    revoked), so an old partner never receives it late."""
    result = await session.execute(
        update(Delivery)
        .where(
            Delivery.referral_id == referral_id,
            IS_PENDING,
            Delivery.event_type == "referral.created",
        )
        .values(status="cancelled", finished_at=now, lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0))


async def replay_dead_letter(
    session: AsyncSession,
    delivery_id: uuid.UUID,
    *,
    actor: Any,
    now: datetime,
    request_id: str | None = None,
) -> bool:
    """Put a dead letter back in the queue unchanged (same webhook-id, same bytes) and
    record the replay. Returns False when the delivery is not a dead letter.

    A referral's body is never sent again once the referral was revoked (the person
    withdrew consent) or has moved to another partner: that raises :class:`Conflict`
    with the reason. Notices and notifications carry no data about the person and may
    always be replayed.
    """
    from app import audit
    from app.audit import Action
    from app.models import Referral

    delivery = await session.get(Delivery, delivery_id)
    if delivery is None or delivery.status != "dead":
        return False
    referral = (
        await session.get(Referral, delivery.referral_id)
        if delivery.referral_id is not None
        else None
    )
    if referral is not None and delivery.event_type == "referral.created":
        if referral.status == "revoked":
            raise Conflict(
                "The referral was revoked: its body may not be sent again.",
                reason="referral_revoked",
            )
        if referral.partner_id != delivery.partner_id:
            raise Conflict(
                "The referral has moved to another partner: this body may not be sent again.",
                reason="partner_no_longer_assigned",
            )
    delivery.status = PENDING
    delivery.needs_human = False
    delivery.next_attempt_at = now
    delivery.finished_at = None
    delivery.attempt_count = 0
    delivery.replays += 1
    if referral is not None and referral.status == "undeliverable":
        referral.status = "queued"
        referral.needs_human = False
        referral.human_reason = None
        referral.closed_at = None
        referral.updated_at = now
    log_on_commit(
        session,
        log,
        "info",
        "dead_letter_replayed",
        delivery_id=str(delivery.id),
        referral_id=str(delivery.referral_id) if delivery.referral_id else None,
        partner_id=delivery.partner_id,
        event_type=delivery.event_type,
        replays=delivery.replays,
        **actor_fields(actor),
    )
    await audit.record(
        session,
        action=Action.dead_letter_replayed,
        actor=actor,
        referral_id=delivery.referral_id,
        partner_id=delivery.partner_id,
        request_id=request_id,
        data={"delivery_id": str(delivery.id), "attempt": delivery.replays, "reason": "admin"},
    )
    return True
