"""Exports (NDJSON, CSV), streamed and verified as they stream (the offline reader is
app.audit.reader).

NDJSON: a signed ``header`` line, then ``event`` lines in seq order, then the stored
``checkpoint`` lines within the range (and the latest stored checkpoint, even beyond it),
then the export's own ``checkpoint`` line (``"export": true``) over the last event. CSV: the
same records, one per row, ``record`` telling which (see docs/audit.md).

The service signs the export's checkpoint only after the exported events have been checked
on their way out (hashes, links, every stored checkpoint in range). If they fail, the stream
ends with an ``error`` record instead, and the export cannot verify.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import io
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import orjson
import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.audit import merkle, store, writer
from app.audit.chain import (
    Checkpoint,
    EventRecord,
    Signer,
    canonical,
    public_key_b64,
)
from app.audit.tree import TreeError, TreeStore
from app.audit.verify import ChainVerifier, VerifyReport
from app.audit.vocabulary import Action
from app.audit.writer import Actor, AuditConfig
from app.auth import Principal
from app.errors import Conflict
from app.models.audit import AuditEvent
from app.models.base import utcnow
from app.settings import Settings

log = structlog.get_logger("ruta.audit")

FORMAT_NAME = "ruta-audit-export"
FORMAT_VERSION = 2
Format = Literal["ndjson", "csv"]

CSV_COLUMNS = (
    "record",
    "seq",
    "prev_hash",
    "hash",
    "occurred_at",
    "action",
    "actor_type",
    "actor_id",
    "actor_role",
    "screening_id",
    "referral_id",
    "partner_id",
    "subject_id",
    "request_id",
    "data",
    "key_id",
    "signature",
)


@dataclass(slots=True)
class ExportPlan:
    from_seq: int
    to_seq: int
    header: dict[str, Any]
    checkpoints: list[Checkpoint]
    signer: Signer
    #: The compact range of the tree before ``from_seq`` (a partial export), and the chain
    #: hash of event ``from_seq - 1`` with its inclusion proof in that tree.
    prefix: merkle.CompactRange | None = None
    anchor: tuple[str, list[bytes]] | None = None
    #: A consistency proof from ``to_seq`` to the latest stored checkpoint beyond it.
    consistency: tuple[int, list[bytes]] | None = None
    #: The checkpoint signed over the last event once the stream has verified it.
    final: Checkpoint | None = None
    #: Why the stream stopped short, when it did.
    failure: VerifyReport | None = None

    @property
    def empty(self) -> bool:
        return self.to_seq < self.from_seq


async def plan_export(
    session: AsyncSession, settings: Settings, *, from_seq: int, to_seq: int
) -> ExportPlan:
    """Fix and sign the range before the first byte is sent."""
    signer = AuditConfig.from_settings(settings).signer
    log_size, _ = await store.head(session)
    header = {
        "type": "header",
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "from_seq": from_seq,
        "to_seq": to_seq,
        # How many events the log held: a checkpoint beyond it means events were removed,
        # one between to_seq and log_size only lies outside this export's range.
        "log_size": log_size,
        "generated_at": utcnow().isoformat().replace("+00:00", "Z"),
        "hash": "sha256",
        "canonicalization": "RFC8785",
        "signature": "Ed25519",
        "tree": "RFC9162",
        "origin": signer.origin,
        "key_id": signer.key_id,
        "public_key": public_key_b64(signer.public_key),
    }
    # The header is signed so a verifier can trust its range: without it, dropping the first
    # or last events of an export would leave a valid-looking part.
    header["header_signature"] = signer.sign_document(header)
    held = await store.checkpoints(session, from_seq=from_seq, to_seq=to_seq)
    plan = ExportPlan(from_seq, to_seq, header, held, signer)
    if header_empty(header):
        return plan
    latest = await store.latest_checkpoint(session)
    if latest is not None and latest.seq > to_seq:
        held.append(latest)
    await session.run_sync(lambda sync: _tree_parts(sync, plan, latest))
    return plan


def _tree_parts(session: Session, plan: ExportPlan, latest: Checkpoint | None) -> None:
    """What a verifier needs besides the events: the tree before them (a partial export
    continues its root from there, and its first event's ``prev_hash`` is proven in it),
    and the proof that the log signed at the latest stored checkpoint extends them."""
    tree = TreeStore(session)
    # A broken chain (events missing) leaves a part out; the stream's own check then
    # refuses to sign the export, and says why.
    before = plan.from_seq - 1
    if before:
        with contextlib.suppress(TreeError):
            plan.prefix = tree.compact(before)
            anchor = session.execute(
                select(AuditEvent.hash).where(AuditEvent.seq == before)
            ).scalar_one()
            plan.anchor = (anchor, tree.inclusion_proof(before - 1, before))
    if latest is not None and latest.root is not None and latest.seq > plan.to_seq:
        with contextlib.suppress(TreeError):
            plan.consistency = (latest.seq, tree.consistency_proof(plan.to_seq, latest.seq))


class ChainBroken(Conflict):
    """The chain fails against the service's own checkpoints: nothing is signed for it."""

    type = "/problems/audit-chain-broken"


async def prepare_export(
    session: AsyncSession,
    settings: Settings,
    *,
    actor: Principal | Actor,
    fmt: Format,
    from_seq: int | None = None,
    to_seq: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> ExportPlan:
    """Check the chain against its stored checkpoints, fix and sign the range, and record
    the export (``audit.exported``) in the caller's transaction.

    Raises :class:`ChainBroken` (409) rather than sign anything for a chain that fails: a
    stored checkpoint whose event is gone (truncated) or is not the one it signed."""
    broken = await store.check_against_checkpoints(session)
    if broken is not None:
        log.error("audit_export_refused", reason=broken.reason, first_bad_seq=broken.first_bad_seq)
        raise ChainBroken(
            "The audit chain fails against the service's own checkpoints, so no export is "
            "signed. Ask the operator to run `ruta audit verify`.",
            reason=broken.reason,
            first_bad_seq=broken.first_bad_seq,
            checkpoint_seq=broken.checkpoint_seq,
        )
    low, high = await store.seq_range(
        session, from_seq=from_seq, to_seq=to_seq, since=since, until=until
    )
    plan = await plan_export(session, settings, from_seq=low, to_seq=high)
    writer.attach(session, settings)
    await writer.record(
        session,
        action=Action.audit_exported,
        actor=actor,
        data={"format": fmt, "from_seq": low, "to_seq": high},
    )
    return plan


def header_empty(header: dict[str, Any]) -> bool:
    return int(header["to_seq"]) < int(header["from_seq"])


async def _verified(
    session: AsyncSession, plan: ExportPlan
) -> AsyncIterator[list[tuple[Sequence[Any], str, bytes]]]:
    """The range's events, a batch at a time, each as its row, its hash and its canonical
    body, checked on their way out; the export's checkpoint is signed only when every one
    of them held."""
    verifier = ChainVerifier(
        plan.signer.public_key,
        plan.checkpoints,
        start_seq=plan.from_seq,
        end_seq=plan.to_seq,
        log_size=int(plan.header["log_size"]),
        own_source="database",
        prefix=plan.prefix.copy() if plan.prefix else None,
        anchor_hash=plan.anchor[0] if plan.anchor else None,
        consistency=dict([plan.consistency]) if plan.consistency else None,
    )
    if not plan.empty:
        batches = store.stream_rows(
            session, plan.from_seq, plan.to_seq, release_between_batches=True
        )
        async with contextlib.aclosing(batches):
            async for rows in batches:
                checked = _check_batch(verifier, rows)
                if checked:
                    yield checked
                if len(checked) < len(rows):
                    break
    _sign_or_refuse(plan, verifier)


def _check_batch(
    verifier: ChainVerifier, rows: Sequence[Sequence[Any]]
) -> list[tuple[Sequence[Any], str, bytes]]:
    """The rows that hold, up to the first that does not (the verifier says why)."""
    out = []
    sha256, canonical_row, feed_hashed = hashlib.sha256, store.canonical_row, verifier.feed_hashed
    for row in rows:
        body = canonical_row(row)
        if body is None:  # stored data that does not read: feed says why
            verifier.feed(store.record_of(row))
            break
        digest = sha256(body).digest()
        seq, prev_hash, stored = row[0], row[1], row[2]  # the hash as its stored 32 bytes
        hash_hex = digest.hex()
        if digest == stored and type(seq) is int and type(prev_hash) is str:
            if not feed_hashed(seq, prev_hash, hash_hex, digest):
                break
        elif not verifier.feed(store.record_of(row), body):
            break
        out.append((row, hash_hex, body))
    return out


def _sign_or_refuse(plan: ExportPlan, verifier: ChainVerifier) -> None:
    report = verifier.finish()
    if plan.empty:
        return
    if report.ok and verifier.compact is None:
        report.ok, report.reason = False, "tree_unavailable"
        report.detail = "the tree before the export's range could not be read"
    if report.ok and report.head_hash is not None and verifier.compact is not None:
        root = verifier.compact.root()
        plan.final = plan.signer.sign_tree(plan.to_seq, root, report.head_hash, utcnow())
    else:
        plan.failure = report
        log.error("audit_export_refused", reason=report.reason, first_bad_seq=report.first_bad_seq)


def _line(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(obj) + b"\n"


def _event_lines(checked: list[tuple[Sequence[Any], str, bytes]]) -> bytes:
    """Event lines from the canonical bodies just hashed: ``type`` and ``hash`` first, then
    the body's members (the same object as ``record.to_json()``, written once). The
    offline checker hashes such a line's bytes as they stand (app.audit.fast)."""
    return b"".join(
        [b'{"type":"event","hash":"%s",%s\n' % (h.encode(), body[1:]) for _, h, body in checked]
    )


def _error_record(plan: ExportPlan) -> dict[str, Any]:
    assert plan.failure is not None
    return {
        "type": "error",
        "reason": plan.failure.reason,
        "first_bad_seq": plan.failure.first_bad_seq,
        "detail": "the chain failed verification while it was exported; this export is not "
        "signed. Ask the operator to run `ruta audit verify`.",
    }


def _tree_records(plan: ExportPlan) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    prefix = consistency = None
    if plan.prefix is not None and plan.anchor is not None:
        prefix = {
            "type": "tree_prefix",
            "size": plan.prefix.size,
            "hashes": [base64.b64encode(h).decode() for h in plan.prefix.hashes],
            "chain_hash": plan.anchor[0],
            "chain_hash_proof": [base64.b64encode(h).decode() for h in plan.anchor[1]],
        }
    if plan.consistency is not None:
        consistency = {
            "type": "consistency",
            "from_size": plan.to_seq,
            "to_size": plan.consistency[0],
            "proof": [base64.b64encode(h).decode() for h in plan.consistency[1]],
        }
    return prefix, consistency


async def ndjson_chunks(session: AsyncSession, plan: ExportPlan) -> AsyncIterator[bytes]:
    yield _line(plan.header)
    prefix, consistency = _tree_records(plan)
    if prefix is not None:
        yield _line(prefix)
    async for checked in _verified(session, plan):
        yield _event_lines(checked)
    if plan.failure is not None:
        yield _line(_error_record(plan))
        return
    for checkpoint in plan.checkpoints:
        yield _line(checkpoint.to_json())
    if consistency is not None:
        yield _line(consistency)
    if plan.final is not None:
        yield _line({**plan.final.to_json(), "export": True})


def _csv_row(values: Iterable[Any]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(values)
    return out.getvalue()


def _event_csv(record: EventRecord, hash_hex: str) -> list[Any]:
    refs = record.refs
    return [
        "event",
        record.seq,
        record.prev_hash,
        hash_hex,
        record.occurred_at,
        record.action,
        record.actor["type"],
        record.actor["id"] or "",
        record.actor["role"] or "",
        refs["screening_id"] or "",
        refs["referral_id"] or "",
        refs["partner_id"] or "",
        refs["subject_id"] or "",
        refs["request_id"] or "",
        canonical(record.data).decode(),
        "",
        "",
    ]


def _checkpoint_csv(checkpoint: Checkpoint, kind: str) -> list[Any]:
    row: list[Any] = [""] * len(CSV_COLUMNS)
    row[0], row[1], row[3], row[4] = kind, checkpoint.seq, checkpoint.hash, checkpoint.time
    row[-2], row[-1] = checkpoint.key_id, checkpoint.signature
    if checkpoint.note is not None:
        # A tree checkpoint's root and signed note, as JSON in the data column.
        row[CSV_COLUMNS.index("data")] = orjson.dumps(
            {"root": checkpoint.root, "note": checkpoint.note}
        ).decode()
    return row


def _json_row(kind: str, document: dict[str, Any]) -> list[Any]:
    row: list[Any] = [""] * len(CSV_COLUMNS)
    row[0] = kind
    row[CSV_COLUMNS.index("data")] = orjson.dumps(document).decode()
    return row


async def csv_chunks(session: AsyncSession, plan: ExportPlan) -> AsyncIterator[bytes]:
    yield _csv_row(CSV_COLUMNS).encode()
    yield _csv_row(_json_row("header", plan.header)).encode()
    prefix, consistency = _tree_records(plan)
    if prefix is not None:
        yield _csv_row(_json_row("tree_prefix", prefix)).encode()
    buffer = io.StringIO()
    rows = csv.writer(buffer, lineterminator="\n")
    async for checked in _verified(session, plan):
        rows.writerows(_event_csv(store.record_of(row), hash_hex) for row, hash_hex, _ in checked)
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
    if plan.failure is not None:
        yield _csv_row(_json_row("error", _error_record(plan))).encode()
        return
    for checkpoint in plan.checkpoints:
        yield _csv_row(_checkpoint_csv(checkpoint, "checkpoint")).encode()
    if consistency is not None:
        yield _csv_row(_json_row("consistency", consistency)).encode()
    if plan.final is not None:
        yield _csv_row(_checkpoint_csv(plan.final, "export_checkpoint")).encode()


def chunks(session: AsyncSession, plan: ExportPlan, fmt: Format) -> AsyncIterator[bytes]:
    """The export's bytes. ``session`` must be the stream's own: it is released between
    batches."""
    return ndjson_chunks(session, plan) if fmt == "ndjson" else csv_chunks(session, plan)
