"""Online verification in bounded time, whatever the log's size, and the full walk in the
background.

``GET /v1/audit/verify`` (:func:`verify_online`) checks what was appended since the last
verification (the *frontier*: every event up to it verified, with the chain hash and the
tree's compact range there), against every checkpoint stored since; it checks that the log
still reaches the frontier and every stored checkpoint (nothing cut off), and that the
stored tree still gives the latest checkpoint's signed root. It stops after
:data:`TIME_BUDGET` seconds of work, says how far it got, and asks for the full walk.

The full walk (:func:`walk_if_due`, run by the API processes' background tasks: one at a
time, leased) re-verifies the whole chain from seq 1 against every stored checkpoint,
reports its progress in the state row, and records its result as an ``audit.verified``
event (scope ``full``). It runs when asked for (a first verification, or a failure) and
otherwise every ``RUTA_AUDIT_FULL_VERIFY_HOURS``.
"""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import or_, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit import merkle, store
from app.audit.chain import Checkpoint
from app.audit.tree import TreeError, TreeStore
from app.audit.verify import ChainVerifier, VerifyReport
from app.audit.vocabulary import Action
from app.audit.writer import Actor, AuditConfig, attach, record, system
from app.auth import Principal
from app.models.audit import AuditVerificationState
from app.models.base import utcnow
from app.settings import Settings

log = structlog.get_logger("ruta.audit")

#: Seconds of verification work one request does at most; the rest is left to the walk.
TIME_BUDGET = 0.3
#: A full walk's lease, renewed with each progress report.
WALK_LEASE = timedelta(seconds=60)
PROGRESS_SECONDS = 2.0
VERIFIER = system("audit-verifier")
STATE_ID = 1


@dataclass(slots=True)
class Increment:
    """What one incremental verification did."""

    report: VerifyReport
    from_seq: int
    verified_through: int
    complete: bool


async def _state(session: AsyncSession) -> AuditVerificationState:
    state = await session.get(AuditVerificationState, STATE_ID, populate_existing=True)
    if state is None:  # pragma: no cover - migration 0007 inserts it
        raise RuntimeError("audit_verification_state has no row; run the migrations")
    return state


def _compact(state: AuditVerificationState) -> merkle.CompactRange:
    hashes = [base64.b64decode(h) for h in state.frontier_tree]
    return merkle.CompactRange(state.frontier_seq, hashes)


def _failure(reason: str, first_bad: int, detail: str, checkpoint: int | None) -> VerifyReport:
    return VerifyReport(
        ok=False,
        events_checked=0,
        first_seq=None,
        last_seq=None,
        head_hash=None,
        checkpoints_checked=0,
        first_bad_seq=first_bad,
        reason=reason,
        detail=detail,
        checkpoint_seq=checkpoint,
        checkpoint_source="database" if checkpoint is not None else None,
    )


async def _still_reaches_frontier(
    session: AsyncSession,
    state: AuditVerificationState,
    head_seq: int,
    latest: Checkpoint | None,
) -> VerifyReport | None:
    """``state`` and ``latest`` were read before ``head_seq`` (see :func:`advance`)."""
    if latest is not None and latest.seq > head_seq:
        return _failure(
            "truncated",
            head_seq + 1,
            f"a stored checkpoint covers seq {latest.seq} but the log ends at seq {head_seq}: "
            "events were removed from its end",
            latest.seq,
        )
    if head_seq < state.frontier_seq:
        return _failure(
            "truncated",
            head_seq + 1,
            f"events up to seq {state.frontier_seq} were verified, but the log now ends at "
            f"seq {head_seq}: events were removed from its end",
            None,
        )
    if state.frontier_seq and await store.event_hash(session, state.frontier_seq) != (
        state.frontier_hash
    ):
        return _failure(
            "hash_mismatch",
            state.frontier_seq,
            "the last verified event is no longer the one that was verified",
            None,
        )
    return None


async def _latest_root_holds(session: AsyncSession, head_seq: int) -> VerifyReport | None:
    """The stored tree still gives the latest tree checkpoint's signed root."""
    latest = await store.latest_tree_checkpoint(session)
    if latest is None or latest.seq > head_seq:
        return None  # none yet; or beyond the head, which the walk reports as truncated
    try:
        root = await session.run_sync(lambda sync: TreeStore(sync).root(latest.seq))
    except TreeError as exc:
        return _failure("malformed", latest.seq, str(exc), latest.seq)
    if root != latest.root_bytes:
        return _failure(
            "checkpoint_mismatch",
            latest.seq,
            "the stored tree no longer gives the root the latest checkpoint signed",
            latest.seq,
        )
    return None


async def advance(
    session: AsyncSession, settings: Settings, *, budget: float = TIME_BUDGET
) -> Increment:
    """Verify from the frontier towards the head for at most ``budget`` seconds, and move
    the frontier to where the events verified. Flushes only."""
    state = await _state(session)
    start = state.frontier_seq + 1
    # What the head is held to is read before the head: each checkpoint signs an event
    # written before it or with it, so one read first lies within the head read after it
    # unless events were removed. Read after it, one made in between looked like a cut log.
    latest = await store.latest_checkpoint(session)
    stored = await store.checkpoints(session, from_seq=start)
    head_seq, _ = await store.head(session)
    early = await _still_reaches_frontier(session, state, head_seq, latest)
    early = early or await _latest_root_holds(session, head_seq)
    if early is not None:
        return Increment(early, start, state.frontier_seq, False)
    public_key = AuditConfig.from_settings(settings).signer.public_key
    verifier = ChainVerifier(
        public_key,
        stored,
        start_seq=start,
        anchor_hash=state.frontier_hash,
        log_size=head_seq,
        own_source="database",
        prefix=_compact(state),
    )
    deadline = time.monotonic() + budget
    reached = state.frontier_seq
    records = store.stream_records(session, start, head_seq, batch=1000)
    async with contextlib.aclosing(records):
        async for event in records:
            if not verifier.feed(event):
                break
            reached = event.seq
            if reached % 1000 == 0 and time.monotonic() > deadline:
                break
    complete = reached == head_seq
    if complete:
        report = verifier.finish()
    else:
        # Stopped for time: what is left is checked by the next request, or by the walk.
        verifier.log_size = None
        verifier.pinned = {s: p for s, p in verifier.pinned.items() if s <= reached}
        verifier.roots = {s: p for s, p in verifier.roots.items() if s <= reached}
        report = verifier.finish()
    if report.ok and reached > state.frontier_seq and verifier.compact is not None:
        state.frontier_seq = reached
        state.frontier_hash = verifier.head_hash
        state.frontier_tree = [base64.b64encode(h).decode() for h in verifier.compact.hashes]
    if not report.ok:
        state.walk_requested = True
    await session.flush()
    return Increment(report, start, state.frontier_seq, complete and report.ok)


def walk_status(state: AuditVerificationState, now: datetime) -> dict[str, Any]:
    running = state.walk_owner is not None and (
        state.walk_lease_until is not None and state.walk_lease_until >= now
    )
    if running:
        status = "running"
    elif state.last_walk_finished_at is None:
        status = "requested" if state.walk_requested else "never"
    else:
        status = "ok" if state.last_walk_ok else "failed"
    return {
        "status": status,
        "started_at": (state.walk_started_at if running else state.last_walk_started_at),
        "progress_seq": state.walk_progress_seq if running else state.last_walk_to_seq,
        "to_seq": state.walk_target_seq if running else state.last_walk_to_seq,
        "last_finished_at": state.last_walk_finished_at,
        "last_ok": state.last_walk_ok,
        "last_to_seq": state.last_walk_to_seq,
        "last_first_bad_seq": state.last_walk_first_bad_seq,
        "last_reason": state.last_walk_reason,
        "last_checkpoint_seq": state.last_walk_checkpoint_seq,
    }


async def verify_online(
    session: AsyncSession, settings: Settings, actor: Principal | Actor
) -> dict[str, Any]:
    """The answer of ``GET /v1/audit/verify``, recorded as an ``audit.verified`` event."""
    now = utcnow()
    step = await advance(session, settings)
    state = await _state(session)
    stale = state.last_walk_finished_at is None or now - state.last_walk_finished_at > timedelta(
        hours=settings.audit_full_verify_hours
    )
    if stale or not step.complete:
        state.walk_requested = True
    walk = walk_status(state, now)
    report = step.report
    out = {**report.to_json(), "scope": "incremental", "from_seq": step.from_seq}
    out["verified_through"] = step.verified_through
    out["complete"] = step.complete
    out["full_walk"] = walk
    if report.ok and state.last_walk_ok is False:
        # The events appended since verify, but the last full walk found the chain broken.
        out.update(
            ok=False,
            first_bad_seq=state.last_walk_first_bad_seq,
            reason=state.last_walk_reason,
            checkpoint_seq=state.last_walk_checkpoint_seq,
            detail="the last full verification found the chain broken",
        )
    attach(session, settings)
    await record(
        session,
        action=Action.audit_verified,
        actor=actor,
        data=_event_data(out, "incremental"),
    )
    return out


def _event_data(out: dict[str, Any], scope: str) -> dict[str, Any]:
    data: dict[str, Any] = {
        "ok": bool(out["ok"]),
        "scope": scope,
        "from_seq": out.get("from_seq") or 1,
        "to_seq": out.get("verified_through") or out.get("last_seq") or 0,
        "count": out.get("events_checked", 0),
        "first_bad_seq": out.get("first_bad_seq"),
    }
    if out.get("reason"):
        data["reason"] = out["reason"]
    return data


# -- the full walk ---------------------------------------------------------------------------


async def _claim(
    maker: async_sessionmaker[AsyncSession], settings: Settings, owner: str, now: datetime
) -> int | None:
    """Take the walk if it is due and nobody holds it; return the head it will reach."""
    async with maker() as session:
        state = await _state(session)
        stale = state.last_walk_finished_at is None or (
            now - state.last_walk_finished_at > timedelta(hours=settings.audit_full_verify_hours)
        )
        if not (state.walk_requested or stale):
            return None
        head_seq, _ = await store.head(session)
        taken = await session.execute(
            update(AuditVerificationState)
            .where(
                AuditVerificationState.id == STATE_ID,
                or_(
                    AuditVerificationState.walk_owner.is_(None),
                    AuditVerificationState.walk_lease_until < now,
                ),
            )
            .values(
                walk_owner=owner,
                walk_lease_until=now + WALK_LEASE,
                walk_started_at=now,
                walk_progress_seq=0,
                walk_target_seq=head_seq,
                walk_requested=False,
            )
            .execution_options(synchronize_session=False)
        )
        await session.commit()
    return head_seq if getattr(taken, "rowcount", 0) == 1 else None


async def _progress(
    maker: async_sessionmaker[AsyncSession], owner: str, seq: int, now: datetime
) -> bool:
    """Report progress and renew the lease; False if another process took the walk."""
    async with maker() as session:
        result = await session.execute(
            update(AuditVerificationState)
            .where(
                AuditVerificationState.id == STATE_ID, AuditVerificationState.walk_owner == owner
            )
            .values(walk_progress_seq=seq, walk_lease_until=now + WALK_LEASE)
            .execution_options(synchronize_session=False)
        )
        await session.commit()
    return getattr(result, "rowcount", 0) == 1


async def walk_if_due(
    maker: async_sessionmaker[AsyncSession],
    settings: Settings,
    owner: str,
    *,
    clock: Callable[[], datetime] = utcnow,
) -> VerifyReport | None:
    """Run the full walk if it is due and free; its report, or None if it did not run."""
    started = clock()
    target = await _claim(maker, settings, owner, started)
    if target is None:
        return None
    public_key = AuditConfig.from_settings(settings).signer.public_key
    async with maker() as session:
        verifier = ChainVerifier(
            public_key,
            await _held_to(session, target),
            log_size=target,
            own_source="database",
        )
        await session.rollback()
        last_report = time.monotonic()
        records = store.stream_records(session, 1, target, release_between_batches=True)
        async with contextlib.aclosing(records):
            async for event in records:
                if not verifier.feed(event):
                    break
                if time.monotonic() - last_report > PROGRESS_SECONDS:
                    last_report = time.monotonic()
                    if not await _progress(maker, owner, event.seq, clock()):
                        log.warning("audit_walk_lost_lease", owner=owner)
                        return None
    report = verifier.finish()
    await _finish(maker, settings, owner, started, report, verifier)
    return report


async def _held_to(session: AsyncSession, target: int) -> list[Checkpoint]:
    """The stored checkpoints a walk to ``target`` (the head when it was claimed) holds the
    log to. One beyond the target was made after the claim if the log reaches it now, and
    is left out (it would read as a cut log); if the log ends before it, events were
    removed, and it stays, so the walk reports that. Checkpoints are read before the head
    (each signs an event written before it or with it)."""
    stored = await store.checkpoints(session)
    if all(c.seq <= target for c in stored):
        return stored
    now, _ = await store.head(session)
    return [c for c in stored if c.seq <= target or c.seq > now]


async def _finish(
    maker: async_sessionmaker[AsyncSession],
    settings: Settings,
    owner: str,
    started: datetime,
    report: VerifyReport,
    verifier: ChainVerifier,
) -> None:
    async with maker() as session:
        state = await _state(session)
        if state.walk_owner != owner:
            return
        state.walk_owner = None
        state.walk_lease_until = None
        state.last_walk_started_at = started
        state.last_walk_finished_at = utcnow()
        state.last_walk_ok = report.ok
        state.last_walk_to_seq = report.last_seq or 0
        state.last_walk_first_bad_seq = report.first_bad_seq
        state.last_walk_reason = report.reason
        state.last_walk_checkpoint_seq = report.checkpoint_seq
        reached = report.last_seq or 0
        if report.ok and reached > state.frontier_seq and verifier.compact is not None:
            state.frontier_seq = reached
            state.frontier_hash = report.head_hash
            state.frontier_tree = [base64.b64encode(h).decode() for h in verifier.compact.hashes]
        if not report.ok:
            log.error(
                "audit_full_verification_failed",
                reason=report.reason,
                first_bad_seq=report.first_bad_seq,
            )
        attach(session, settings)
        await record(
            session,
            action=Action.audit_verified,
            actor=VERIFIER,
            data=_event_data({**report.to_json(), "from_seq": 1}, "full"),
        )
        await session.commit()
