"""The one audit writer.

``await record(session, action=..., actor=..., ...)`` validates the event and buffers it in
the session. The buffer is appended to the chain by a ``before_commit`` hook on the session,
in the same transaction as the action, so:

* the chain lock (``pg_advisory_xact_lock`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE``
  write lock) is held only from the append to the commit, and all of a transaction's events
  go in one multi-row INSERT;
* a commit cannot succeed without its events: if the append fails, the commit fails;
* a rollback (of the transaction, or of a savepoint the event was recorded in) discards the
  buffered events with it.

Callers only flush, never commit; the request dependency (or the worker's unit of work)
commits as it already does. :func:`flush_pending` appends early when a caller needs the
sequence numbers before commit.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import structlog
from sqlalchemy import Table, event, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, SessionTransaction

from app.audit import merkle
from app.audit.chain import GENESIS_HASH, REF_KEYS, Checkpoint, EventRecord, Signer, format_time
from app.audit.tree import TreeError, TreeStore
from app.audit.vocabulary import CODE_RE, Action, AuditDataRejected, is_code, validate_data
from app.auth import Principal
from app.db import insert_rows_sync, within
from app.models.audit import AuditCheckpoint, AuditEvent
from app.models.base import utcnow
from app.settings import Settings

log = structlog.get_logger("ruta.audit")

CONFIG_KEY = "ruta.audit.config"
PENDING_KEY = "ruta.audit.pending"
#: The PostgreSQL advisory lock that serialises appends ("RUTAAUDT" as a signed 64-bit int).
CHAIN_LOCK_KEY = int.from_bytes(b"RUTAAUDT", "big", signed=True)


class AuditNotConfigured(RuntimeError):
    """The session has no audit configuration: see :func:`configure_sessionmaker`."""


@dataclass(frozen=True, slots=True)
class AuditConfig:
    signer: Signer
    checkpoint_every: int
    checkpoint_interval: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> AuditConfig:
        return cls(
            signer=Signer(settings.audit_signing_seed(), settings.audit_log_origin),
            checkpoint_every=settings.audit_checkpoint_every,
            # Looked at every half of audit_checkpoint_seconds (app.background): a head that
            # moved is signed within audit_checkpoint_seconds.
            checkpoint_interval=timedelta(seconds=settings.audit_checkpoint_seconds / 2),
        )


def configure_sessionmaker(maker: async_sessionmaker[AsyncSession], settings: Settings) -> None:
    """Give every session of ``maker`` the audit configuration (signing key, checkpoint
    policy). Call once where the sessionmaker is made."""
    maker.configure(info={CONFIG_KEY: AuditConfig.from_settings(settings)})


def attach(session: AsyncSession, settings: Settings) -> None:
    """Configure one session (for sessions not made by a configured sessionmaker)."""
    session.info[CONFIG_KEY] = AuditConfig.from_settings(settings)


def _config(session: Session | AsyncSession) -> AuditConfig:
    config = session.info.get(CONFIG_KEY)
    if not isinstance(config, AuditConfig):
        raise AuditNotConfigured(
            "this session has no audit configuration; call "
            "app.audit.configure_sessionmaker(sessionmaker, settings) where it is created"
        )
    return config


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acted: an API client (by id and role), a system component, or an anonymous
    caller. Never a person's name."""

    type: str
    id: str | None
    role: str | None

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "id": self.id, "role": self.role}


def system(component: str) -> Actor:
    """A component of Ruta acting on its own, e.g. ``system("delivery-worker")``."""
    if not CODE_RE.fullmatch(component):
        raise AuditDataRejected("actor: a system component is a short code")
    return Actor(type="system", id=component, role=None)


def anonymous(key_id: str | None = None) -> Actor:
    """An unauthenticated caller; ``key_id`` only if the presented key was well-formed."""
    if key_id is not None and not CODE_RE.fullmatch(key_id):
        key_id = None
    return Actor(type="anonymous", id=key_id, role=None)


def actor_of(who: Principal | Actor) -> Actor:
    if isinstance(who, Actor):
        return who
    return Actor(type="client", id=str(who.client_id), role=who.role.value)


@dataclass(slots=True)
class _Pending:
    action: str
    actor: dict[str, Any]
    refs: dict[str, Any]
    data: dict[str, Any]
    #: The innermost transaction the event was recorded in; its rollback discards the event.
    transaction: SessionTransaction | None = field(default=None)
    #: The screening, referral and subject ids as UUIDs, for the row's columns (``refs``
    #: holds their text, which is what is hashed).
    ids: tuple[uuid.UUID | None, uuid.UUID | None, uuid.UUID | None] = (None, None, None)


def _uuid(value: uuid.UUID | str | None) -> uuid.UUID | None:
    if value is None or isinstance(value, uuid.UUID):
        return value
    return uuid.UUID(value)


def _code(name: str, value: str | None) -> str | None:
    """``partner_id`` and ``request_id``: identifiers, not text (no spaces, no "@", not a
    bare phone or document number)."""
    if value is not None and not is_code(value):
        raise AuditDataRejected(f"refs.{name}: expected a short code")
    return value


async def record(
    session: AsyncSession,
    *,
    action: Action | str,
    actor: Principal | Actor,
    screening_id: uuid.UUID | str | None = None,
    referral_id: uuid.UUID | str | None = None,
    partner_id: str | None = None,
    subject_id: uuid.UUID | str | None = None,
    request_id: str | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    """Record that ``actor`` did ``action``; the event commits with the caller's transaction.

    Raises :class:`AuditDataRejected` if ``data`` breaks the action's allow-list (see
    :mod:`app.audit.vocabulary`), and :class:`AuditNotConfigured` if the session has no
    signing configuration. Both are programming errors and fail the action.
    """
    _config(session)
    action = Action(action)
    ids = (_uuid(screening_id), _uuid(referral_id), _uuid(subject_id))
    refs = {
        "screening_id": str(ids[0]) if ids[0] is not None else None,
        "referral_id": str(ids[1]) if ids[1] is not None else None,
        "partner_id": _code("partner_id", partner_id),
        "subject_id": str(ids[2]) if ids[2] is not None else None,
        "request_id": _code("request_id", request_id),
    }
    assert tuple(refs) == REF_KEYS
    sync = session.sync_session
    pending: list[_Pending] = sync.info.setdefault(PENDING_KEY, [])
    pending.append(
        _Pending(
            action=action.value,
            actor=actor_of(actor).to_json(),
            refs=refs,
            data=validate_data(action, data or {}),
            transaction=sync.get_nested_transaction() or sync.get_transaction(),
            ids=ids,
        )
    )


async def flush_pending(session: AsyncSession) -> int:
    """Append the buffered events now (taking the chain lock until commit); return the head
    sequence number. Not needed for correctness: commit appends them anyway."""
    return await session.run_sync(_append_pending)


_EVENTS = cast(Table, AuditEvent.__table__)
_HEAD = (
    select(_EVENTS.c.seq, _EVENTS.c.hash, _EVENTS.c.occurred_at)
    .order_by(_EVENTS.c.seq.desc())
    .limit(1)
)
#: One round trip on PostgreSQL: the function (migration 0002) takes the advisory lock, then
#: reads the head on a snapshot taken after the lock was granted.
_LOCK_AND_HEAD = text("SELECT seq, hash, occurred_at FROM ruta_audit_lock_head(:key)").columns(
    _EVENTS.c.seq, _EVENTS.c.hash, _EVENTS.c.occurred_at
)


def _lock_and_read_head(session: Session) -> tuple[int, str, datetime | None]:
    if session.get_bind().dialect.name == "postgresql":
        row = session.execute(_LOCK_AND_HEAD, {"key": CHAIN_LOCK_KEY}).first()
    else:
        # SQLite: the app begins every transaction with BEGIN IMMEDIATE, so this
        # transaction already holds the database's write lock.
        row = session.execute(_HEAD).first()
    if row is None:
        return 0, GENESIS_HASH, None
    return int(row.seq), str(row.hash), row.occurred_at


def _append_pending(session: Session) -> int:
    pending: list[_Pending] = session.info.get(PENDING_KEY) or []
    if not pending:
        return -1
    config = _config(session)
    # The chain's lock is the last lock a transaction takes. before_commit fires before the
    # commit's own flush: without this, the row updates would be flushed while holding the
    # chain, and a transaction holding one of those rows and waiting for the chain (a
    # partner's report racing the worker's record of the same referral) would deadlock.
    session.flush()
    head_seq, head_hash, head_time = _lock_and_read_head(session)
    now = utcnow()
    # Times never go backwards along the chain, whatever the replicas' clocks say, so a time
    # range is always one contiguous seq range.
    if head_time is not None and now < head_time:
        now = head_time
    occurred_at = format_time(now)
    rows: list[dict[str, Any]] = []
    seq, prev = head_seq, head_hash
    for item in pending:
        seq += 1
        record = EventRecord(
            seq=seq,
            prev_hash=prev,
            occurred_at=occurred_at,
            action=item.action,
            actor=item.actor,
            refs=item.refs,
            data=item.data,
        )
        record.hash = record.compute_hash()
        rows.append(_row(record, now, item.ids))
        prev = record.hash
    session.info[PENDING_KEY] = []
    insert_rows_sync(session, _EVENTS, rows)
    every = config.checkpoint_every
    if seq // every > head_seq // every:
        sign_checkpoint(session, config, seq, prev, now)
    return seq


def _row(
    record: EventRecord,
    moment: datetime,
    ids: tuple[uuid.UUID | None, uuid.UUID | None, uuid.UUID | None],
) -> dict[str, Any]:
    refs = record.refs
    return {
        "seq": record.seq,
        "prev_hash": record.prev_hash,
        "hash": record.hash,
        "occurred_at": moment,
        "action": record.action,
        "actor_type": record.actor["type"],
        "actor_id": record.actor["id"],
        "actor_role": record.actor["role"],
        "screening_id": ids[0],
        "referral_id": ids[1],
        "partner_id": refs["partner_id"],
        "subject_id": ids[2],
        "request_id": refs["request_id"],
        "data": record.data,
    }


def sign_checkpoint(
    session: Session, config: AuditConfig, size: int, head_hash: str, now: datetime
) -> Checkpoint | None:
    """Sign and store a tree checkpoint over the first ``size`` events (the caller holds the
    chain lock), extending the stored tree to it.

    Nothing is signed if the events do not form a gapless sequence, or if the new root is
    not consistent with the last tree checkpoint signed (RFC 9162 consistency proof, built
    from the same stored nodes): a log never signs a head inconsistent with an earlier one.
    The refusal is logged; the caller's transaction goes on, and ``ruta audit verify`` and
    ``GET /v1/audit/verify`` report the broken chain.
    """
    tree = TreeStore(session)
    try:
        root = tree.root(size)
        previous = session.execute(
            select(AuditCheckpoint.seq, AuditCheckpoint.root)
            .where(AuditCheckpoint.note.is_not(None))
            .order_by(AuditCheckpoint.seq.desc())
            .limit(1)
        ).first()
        if previous is not None and previous.seq <= size:
            proof = tree.consistency_proof(previous.seq, size)
            old_root = base64.b64decode(previous.root)
            if not merkle.verify_consistency(previous.seq, size, old_root, root, proof):
                raise TreeError(f"the tree is not consistent with checkpoint {previous.seq}")
        tree.extend(size)
    except TreeError as exc:
        log.error("audit_checkpoint_refused", size=size, reason=str(exc))
        return None
    checkpoint = config.signer.sign_tree(size, root, head_hash, now)
    session.execute(
        insert(AuditCheckpoint).values(
            seq=checkpoint.seq,
            hash=checkpoint.hash,
            signed_at=now,
            key_id=checkpoint.key_id,
            signature=checkpoint.signature,
            root=checkpoint.root,
            note=checkpoint.note,
        )
    )
    return checkpoint


def _checkpoint_if_due(session: Session, now: datetime, force: bool) -> Checkpoint | None:
    config = _config(session)
    head_seq, head_hash, _ = _lock_and_read_head(session)
    if head_seq == 0:
        return None
    last = session.execute(
        select(AuditCheckpoint.seq, AuditCheckpoint.signed_at)
        .order_by(AuditCheckpoint.seq.desc())
        .limit(1)
    ).first()
    if last is not None:
        if int(last.seq) >= head_seq:
            return None
        if not force and now - last.signed_at < config.checkpoint_interval:
            return None
    return sign_checkpoint(session, config, head_seq, head_hash, now)


async def checkpoint_if_due(
    session: AsyncSession, settings: Settings, *, force: bool = False
) -> Checkpoint | None:
    """Sign the head if it moved and the last checkpoint is older than half of
    ``audit_checkpoint_seconds`` (or ``force``). Flushes only; the caller commits.

    For a background task::

        async with sessionmaker() as session:
            await audit.checkpoint_if_due(session, settings)
            await session.commit()
    """
    if CONFIG_KEY not in session.info:
        attach(session, settings)
    now = utcnow()
    return await session.run_sync(lambda s: _checkpoint_if_due(s, now, force))


# -- session hooks ---------------------------------------------------------------------------


@event.listens_for(Session, "before_commit")
def _before_commit(session: Session) -> None:
    # Fires for the outermost commit and for each savepoint release; appending at a savepoint
    # release is still inside the outer transaction, so a later rollback undoes it.
    _append_pending(session)


@event.listens_for(Session, "after_soft_rollback")
def _after_soft_rollback(session: Session, previous: SessionTransaction) -> None:
    pending: list[_Pending] | None = session.info.get(PENDING_KEY)
    if not pending:
        return
    if previous.parent is None:
        session.info[PENDING_KEY] = []
        return
    session.info[PENDING_KEY] = [p for p in pending if not within(p.transaction, previous)]


@event.listens_for(Session, "after_transaction_end")
def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None and not transaction.nested:
        session.info.pop(PENDING_KEY, None)
