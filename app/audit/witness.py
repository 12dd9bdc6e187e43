"""Witnesses: every tree checkpoint is also sent outside the database.

The checkpoints table is the outbox: a checkpoint is written in the transaction that signs
it, and each witness has a cursor (``audit_witness_cursors``) up to which it has been sent
the log's checkpoints, in order. After each checkpoint tick the API process sends what is
due, under a lease on the cursor so that replicas do not send the same checkpoint at once
(if they do, nothing breaks: a witness deduplicates on ``webhook-id``):

* an **HTTPS endpoint** gets each checkpoint POSTed as JSON (``type``
  ``audit.checkpoint``: the checkpoint with its signed note, and an RFC 9162 consistency
  proof from the last size sent to it), signed like a partner delivery (Standard Webhooks,
  ``RUTA_AUDIT_WITNESS_SECRET``), through the delivery package's sender (its timeouts, no
  redirects, its address policy) and retry schedule; a witness that stays down is retried
  at the schedule's longest interval, never given up on;
* an **append-only file** gets each checkpoint appended as an NDJSON line, which ``ruta
  audit verify --checkpoints FILE`` reads as it is.

A witness then holds checkpoints the database's owner cannot take back: cutting the log's
tail, or rewriting it, is caught by the first witnessed checkpoint it contradicts.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import structlog
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit import store
from app.audit.chain import Checkpoint
from app.audit.tree import TreeError, TreeStore
from app.delivery import policy, sender, signing
from app.models.audit import AuditCheckpoint, AuditWitnessCursor
from app.models.base import utcnow
from app.settings import Settings

log = structlog.get_logger("ruta.audit")

#: Checkpoints sent to one witness per round, at most.
BATCH = 50
LEASE = timedelta(seconds=60)
#: The wait after the retry schedule is spent: keep trying, hourly.
LONGEST_WAIT = 3600.0


@dataclass(frozen=True, slots=True)
class Witness:
    name: str
    url: str | None = None
    path: Path | None = None


def configured(settings: Settings) -> list[Witness]:
    """The witnesses in the settings, each named by a hash of where it is."""
    out = []
    for url in settings.witness_urls:
        out.append(Witness("https:" + hashlib.sha256(url.encode()).hexdigest()[:24], url=url))
    if settings.audit_witness_file is not None:
        path = settings.audit_witness_file
        digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:24]
        out.append(Witness("file:" + digest, path=path))
    return out


def message(checkpoint: Checkpoint, previous: int, proof: list[bytes]) -> dict[str, Any]:
    """What a witness is sent: the checkpoint, and the proof that it extends the last one
    this witness was sent (``previous_size``; 0 for the first)."""
    return {
        "type": "audit.checkpoint",
        "checkpoint": checkpoint.to_json(),
        "previous_size": previous,
        "consistency": [base64.b64encode(h).decode() for h in proof],
    }


async def _claim(
    maker: async_sessionmaker[AsyncSession], witness: Witness, owner: str, now: datetime
) -> int | None:
    """Lease this witness's cursor if it is due; return how far it has been sent."""
    async with maker() as session:
        if await session.get(AuditWitnessCursor, witness.name) is None:
            session.add(AuditWitnessCursor(witness=witness.name, delivered_seq=0, attempts=0))
            await session.commit()
        taken = await session.execute(
            update(AuditWitnessCursor)
            .where(
                AuditWitnessCursor.witness == witness.name,
                or_(
                    AuditWitnessCursor.lease_until.is_(None),
                    AuditWitnessCursor.lease_until < now,
                ),
                or_(
                    AuditWitnessCursor.next_attempt_at.is_(None),
                    AuditWitnessCursor.next_attempt_at <= now,
                ),
            )
            .values(lease_owner=owner, lease_until=now + LEASE)
            .execution_options(synchronize_session=False)
        )
        await session.commit()
        if getattr(taken, "rowcount", 0) != 1:
            return None
        cursor = await session.get(AuditWitnessCursor, witness.name, populate_existing=True)
        assert cursor is not None
        return cursor.delivered_seq


async def _pending(
    maker: async_sessionmaker[AsyncSession], after: int
) -> list[tuple[Checkpoint, list[bytes]]]:
    """The tree checkpoints after ``after``, each with its consistency proof from the one
    before it (or from ``after``)."""
    async with maker() as session:
        rows = (
            await session.execute(
                select(AuditCheckpoint)
                .where(AuditCheckpoint.seq > after, AuditCheckpoint.note.is_not(None))
                .order_by(AuditCheckpoint.seq)
                .limit(BATCH)
            )
        ).scalars()
        checkpoints = [store.to_checkpoint(row) for row in rows]

        def proofs(sync: Any) -> list[list[bytes]]:
            tree = TreeStore(sync)
            out, previous = [], after
            for checkpoint in checkpoints:
                out.append(tree.consistency_proof(previous, checkpoint.seq) if previous else [])
                previous = checkpoint.seq
            return out

        try:
            made = await session.run_sync(proofs)
        except TreeError as exc:
            log.error("audit_witness_no_proof", reason=str(exc))
            return []
    return list(zip(checkpoints, made, strict=True))


def _append(path: Path, line: bytes) -> None:
    """Append one line and make it durable; a lock keeps processes' lines whole."""
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        os.write(descriptor, line)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


async def _send(
    witness: Witness,
    body: dict[str, Any],
    checkpoint: Checkpoint,
    settings: Settings,
    client: httpx.AsyncClient,
    now: datetime,
) -> policy.Result:
    if witness.path is not None:
        try:
            _append(witness.path, orjson.dumps(body["checkpoint"]) + b"\n")
        except OSError as exc:
            return policy.Result(status_code=None, error=f"file:{type(exc).__name__}")
        return policy.Result(status_code=200)
    assert witness.url is not None
    raw = orjson.dumps(body)
    origin = hashlib.sha256(checkpoint.note.encode() if checkpoint.note else b"").hexdigest()
    headers = signing.headers(
        webhook_id=f"msg_ruta_checkpoint_{checkpoint.seq}_{origin[:16]}",
        body=raw,
        secrets=[settings.witness_secret()],
        timestamp=now,
    )
    sent = await sender.post(
        client,
        witness.url,
        raw,
        headers,
        relaxed=settings.relaxed_network,
        loopback_only=settings.loopback_only,
    )
    return sent.result


async def _deliver_one(
    maker: async_sessionmaker[AsyncSession],
    settings: Settings,
    client: httpx.AsyncClient,
    witness: Witness,
    owner: str,
    now: datetime,
) -> int:
    after = await _claim(maker, witness, owner, now)
    if after is None:
        return 0
    delivered, attempts_failed, error = after, 0, None
    sent = 0
    for checkpoint, proof in await _pending(maker, after):
        result = await _send(
            witness, message(checkpoint, delivered, proof), checkpoint, settings, client, now
        )
        if policy.classify(result) is policy.Outcome.delivered:
            delivered, sent = checkpoint.seq, sent + 1
            continue
        attempts_failed, error = 1, result.error or f"http_{result.status_code}"
        break
    async with maker() as session:
        cursor = await session.get(AuditWitnessCursor, witness.name)
        assert cursor is not None
        if cursor.lease_owner == owner:
            cursor.delivered_seq = max(cursor.delivered_seq, delivered)
            cursor.lease_owner = cursor.lease_until = None
            if attempts_failed:
                cursor.attempts += 1
                wait = policy.next_delay(cursor.attempts, policy.Result(None, error))
                cursor.next_attempt_at = now + timedelta(seconds=wait or LONGEST_WAIT)
                cursor.last_error = (error or "")[:200]
                log.warning("audit_witness_failed", witness=witness.name, error=error)
            else:
                cursor.attempts, cursor.next_attempt_at, cursor.last_error = 0, None, None
        await session.commit()
    return sent


async def deliver_due(
    maker: async_sessionmaker[AsyncSession],
    settings: Settings,
    owner: str,
    *,
    client: httpx.AsyncClient | None = None,
    now: datetime | None = None,
) -> int:
    """Send every configured witness the checkpoints it has not been sent; return how many
    were sent."""
    witnesses = configured(settings)
    if not witnesses:
        return 0
    moment = now or utcnow()
    own = client is None
    http = client or sender.new_client()
    try:
        total = 0
        for witness in witnesses:
            total += await _deliver_one(maker, settings, http, witness, owner, moment)
        return total
    finally:
        if own:
            await http.aclose()
