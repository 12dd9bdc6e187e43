"""Proofs an auditor can take away and check offline, without the rest of the log.

* An **inclusion proof** bundle: a tree checkpoint, and events (one referral's, or one
  screening's disclosures), each with its RFC 9162 inclusion proof in the tree of the
  checkpoint's size.
* A **consistency proof** bundle: two tree checkpoints and the proof that the later log
  extends the earlier one, so an auditor who kept yesterday's checkpoint sees that today's
  log did not rewrite or drop anything before it.

``ruta audit prove …`` writes a bundle, ``ruta audit verify --proof FILE`` checks it with the
public key (and the checkpoints you kept): :func:`verify_bundle`.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.audit import merkle, store
from app.audit.chain import Checkpoint, EventRecord, signature_valid
from app.audit.tree import TreeError, TreeStore
from app.audit.vocabulary import Action
from app.audit.writer import checkpoint_if_due
from app.errors import NotFound, ValidationFailed, field_error
from app.models.audit import AuditCheckpoint, AuditEvent
from app.settings import Settings

#: The actions that disclose a screening's data (as GET /v1/screenings/{id}/disclosures).
DISCLOSURES = (Action.referral_forwarded.value, Action.personal_data_read.value)
#: The most events one inclusion bundle holds.
MAX_ENTRIES = 1000


def _b64(values: Iterable[bytes]) -> list[str]:
    return [base64.b64encode(v).decode() for v in values]


async def _tree_checkpoint(
    session: AsyncSession, settings: Settings, size: int | None, name: str
) -> Checkpoint:
    """The stored tree checkpoint of ``size``; without one, a fresh checkpoint of the head
    (signed now if the head moved)."""
    if size is None:
        await checkpoint_if_due(session, settings, force=True)
        await session.flush()
        query = select(AuditCheckpoint).where(AuditCheckpoint.note.is_not(None))
        query = query.order_by(AuditCheckpoint.seq.desc()).limit(1)
    else:
        query = select(AuditCheckpoint).where(
            AuditCheckpoint.seq == size, AuditCheckpoint.note.is_not(None)
        )
    row = (await session.execute(query)).scalar_one_or_none()
    if row is None:
        raise NotFound(
            "No signed tree checkpoint of this size; see GET /v1/audit/checkpoints.",
            errors=[field_error(("query", name), "not a checkpointed size", "checkpoint")],
        )
    return store.to_checkpoint(row)


async def inclusion_bundle(
    session: AsyncSession,
    settings: Settings,
    *,
    referral_id: uuid.UUID | None = None,
    screening_id: uuid.UUID | None = None,
    size: int | None = None,
) -> dict[str, Any]:
    """The events of one referral, or one screening's disclosures, with their inclusion
    proofs against a signed size (the latest checkpoint, made now, by default)."""
    if (referral_id is None) == (screening_id is None):
        raise ValidationFailed(
            [field_error(("query", "referral_id"), "give referral_id or screening_id", "one_of")]
        )
    # Known to the log: every referral and screening has events (created, received).
    column, ident = (
        (AuditEvent.referral_id, referral_id)
        if referral_id is not None
        else (AuditEvent.screening_id, screening_id)
    )
    if not (await session.execute(select(exists().where(column == ident)))).scalar():
        raise NotFound("The audit trail holds no event of this id.")
    checkpoint = await _tree_checkpoint(session, settings, size, "size")
    if referral_id is not None:
        selection: dict[str, Any] = {"referral_id": str(referral_id)}
        filters = store.EventFilter(referral_id=referral_id)
    else:
        selection = {"screening_id": str(screening_id), "actions": list(DISCLOSURES)}
        filters = store.EventFilter(screening_id=screening_id)
    query = filters.apply(select(*store.EVENT_COLUMNS)).where(AuditEvent.seq <= checkpoint.seq)
    if screening_id is not None:
        query = query.where(AuditEvent.action.in_(DISCLOSURES))
    rows = await session.execute(query.order_by(AuditEvent.seq).limit(MAX_ENTRIES))
    records = [store.record_of(row) for row in rows]
    later = filters.apply(select(func.count()).select_from(AuditEvent))
    later = later.where(AuditEvent.seq > checkpoint.seq)
    if screening_id is not None:
        later = later.where(AuditEvent.action.in_(DISCLOSURES))
    pending = int((await session.execute(later)).scalar_one())

    def prove(sync: Session) -> list[list[bytes]]:
        tree = TreeStore(sync)
        return [tree.inclusion_proof(r.seq - 1, checkpoint.seq) for r in records]

    proofs = await session.run_sync(prove)
    return {
        "type": "inclusion_proof",
        "selection": selection,
        "checkpoint": checkpoint.to_json(),
        "entries": [
            {"event": r.to_json(), "proof": _b64(p)} for r, p in zip(records, proofs, strict=True)
        ],
        # Matching events after the checkpoint: ask again after the next one.
        "pending": pending,
    }


async def consistency_bundle(
    session: AsyncSession, settings: Settings, *, from_size: int, to_size: int | None = None
) -> dict[str, Any]:
    """The proof that the log signed at ``to_size`` (the latest checkpoint, made now, by
    default) extends the log of ``from_size`` events."""
    new = await _tree_checkpoint(session, settings, to_size, "to_size")
    if not 1 <= from_size <= new.seq:
        raise NotFound(
            "The log signed at to_size is smaller than from_size.",
            errors=[field_error(("query", "from_size"), "at most to_size", "range")],
        )
    old = (
        await session.execute(
            select(AuditCheckpoint).where(
                AuditCheckpoint.seq == from_size, AuditCheckpoint.note.is_not(None)
            )
        )
    ).scalar_one_or_none()
    try:
        proof = await session.run_sync(
            lambda sync: TreeStore(sync).consistency_proof(from_size, new.seq)
        )
    except TreeError:
        raise NotFound("The log cannot prove this: its events are not all there.") from None
    return {
        "type": "consistency_proof",
        "from_size": from_size,
        "to_size": new.seq,
        "old": None if old is None else store.to_checkpoint(old).to_json(),
        "new": new.to_json(),
        "proof": _b64(proof),
    }


# -- verifying a bundle (offline) ------------------------------------------------------------


class ProofUnreadable(ValueError):
    """Not a proof bundle (exit code 2)."""


@dataclass(slots=True)
class ProofReport:
    ok: bool
    kind: str
    size: int | None = None
    from_size: int | None = None
    entries_checked: int = 0
    #: The seqs whose event or proof failed, and why.
    failures: list[dict[str, Any]] = field(default_factory=list)
    detail: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def verdict(self) -> str:
        if self.kind == "inclusion_proof":
            if self.ok:
                return (
                    f"PROVEN: {self.entries_checked} events are in the log signed at size "
                    f"{self.size}"
                )
            return f"NOT PROVEN: {self.detail or ''} {self.failures[:3]}".rstrip()
        if self.ok:
            return f"PROVEN: the log signed at size {self.size} extends size {self.from_size}"
        return f"NOT PROVEN: {self.detail}"


def _decode(values: Any) -> list[bytes]:
    if not isinstance(values, list):
        raise ProofUnreadable("a proof is a list of base64 hashes")
    try:
        return [base64.b64decode(str(v), validate=True) for v in values]
    except ValueError:
        raise ProofUnreadable("a proof hash is not base64") from None


def _checkpoint(obj: Any, what: str) -> Checkpoint:
    try:
        checkpoint = Checkpoint.from_json(obj)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ProofUnreadable(f"the bundle's {what} checkpoint is not well formed") from None
    if checkpoint.note is None or checkpoint.root_bytes is None:
        raise ProofUnreadable(f"the bundle's {what} checkpoint is not a tree checkpoint")
    return checkpoint


def _held_root(held: Iterable[Checkpoint], size: int) -> bytes | None:
    for checkpoint in held:
        if checkpoint.seq == size and checkpoint.root_bytes is not None:
            return checkpoint.root_bytes
    return None


def _verify_inclusion(
    bundle: dict[str, Any], key: Ed25519PublicKey, held: list[Checkpoint]
) -> ProofReport:
    checkpoint = _checkpoint(bundle.get("checkpoint"), "")
    report = ProofReport(ok=False, kind="inclusion_proof", size=checkpoint.seq)
    root = checkpoint.root_bytes
    assert root is not None
    if not signature_valid(checkpoint, key):
        report.detail = "the checkpoint's signature does not verify with this key"
        return report
    kept = _held_root([c for c in held if signature_valid(c, key)], checkpoint.seq)
    if kept is not None and kept != root:
        report.detail = "the checkpoint contradicts the one you kept of the same size"
        return report
    entries = bundle.get("entries")
    if not isinstance(entries, list):
        raise ProofUnreadable("an inclusion bundle has a list of entries")
    for entry in entries:
        try:
            event = EventRecord.from_json(entry["event"])
            proof = _decode(entry["proof"])
        except (KeyError, TypeError):
            raise ProofUnreadable("an entry is an event and its proof") from None
        seq = event.seq if type(event.seq) is int else None
        why = None
        try:
            if seq is None or not 1 <= seq <= checkpoint.seq:
                why = "outside the checkpoint's size"
            elif event.compute_hash() != event.hash:
                why = "the event does not match its hash"
            elif not merkle.verify_inclusion(
                seq - 1, checkpoint.seq, merkle.leaf_hash(bytes.fromhex(event.hash)), proof, root
            ):
                why = "the inclusion proof fails"
        except (TypeError, ValueError, KeyError, AttributeError):
            why = "the event is malformed"
        if why is not None:
            report.failures.append({"seq": seq, "reason": why})
        report.entries_checked += 1
    report.ok = not report.failures
    if report.failures:
        report.detail = f"{len(report.failures)} of {report.entries_checked} events fail"
    return report


def _verify_consistency(
    bundle: dict[str, Any], key: Ed25519PublicKey, held: list[Checkpoint]
) -> ProofReport:
    new = _checkpoint(bundle.get("new"), "new")
    try:
        from_size = int(bundle["from_size"])
    except (KeyError, TypeError, ValueError):
        raise ProofUnreadable("a consistency bundle states its from_size") from None
    report = ProofReport(ok=False, kind="consistency_proof", size=new.seq, from_size=from_size)
    if not signature_valid(new, key):
        report.detail = "the new checkpoint's signature does not verify with this key"
        return report
    trusted = [c for c in held if signature_valid(c, key)]
    old_root = _held_root(trusted, from_size)
    if old_root is None and bundle.get("old") is not None:
        old = _checkpoint(bundle["old"], "old")
        if old.seq == from_size and signature_valid(old, key):
            old_root = old.root_bytes
    if old_root is None:
        report.detail = (
            f"no signed checkpoint of size {from_size} to check against: pass the one you "
            "kept with --checkpoints"
        )
        return report
    new_root = new.root_bytes
    assert new_root is not None
    proof = _decode(bundle.get("proof"))
    report.ok = merkle.verify_consistency(from_size, new.seq, old_root, new_root, proof)
    if not report.ok:
        report.detail = (
            f"the log signed at size {new.seq} does not extend the one of size {from_size}: "
            "events before it were rewritten or removed"
        )
    return report


def verify_bundle(
    bundle: Any, key: Ed25519PublicKey, held: Iterable[Checkpoint] = ()
) -> ProofReport:
    """Check a proof bundle with the public key (and checkpoints you kept)."""
    if not isinstance(bundle, dict):
        raise ProofUnreadable("not a proof bundle")
    kind = bundle.get("type")
    if kind == "inclusion_proof":
        return _verify_inclusion(bundle, key, list(held))
    if kind == "consistency_proof":
        return _verify_consistency(bundle, key, list(held))
    raise ProofUnreadable("not a proof bundle (its type is neither inclusion nor consistency)")
