"""Exports (NDJSON, CSV), streamed, each ending with a checkpoint signed at export time over
the last exported event; and the reader the offline verifier uses.

NDJSON: a ``header`` line, then ``event`` lines in seq order, then the stored ``checkpoint``
lines within the range, then the export's own ``checkpoint`` line. CSV: the same records,
one per row, ``record`` telling which (see docs/audit.md).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import store
from app.audit.chain import (
    Checkpoint,
    EventRecord,
    canonical,
    document_signature_valid,
    public_key_b64,
)
from app.audit.verify import ChainVerifier, VerifyReport
from app.audit.writer import AuditConfig
from app.models.base import utcnow
from app.settings import Settings

FORMAT_NAME = "ruta-audit-export"
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
    final: Checkpoint | None


async def plan_export(
    session: AsyncSession, settings: Settings, *, from_seq: int, to_seq: int
) -> ExportPlan:
    """Fix the range and sign the export's checkpoint before the first byte is sent."""
    signer = AuditConfig.from_settings(settings).signer
    final: Checkpoint | None = None
    if to_seq >= from_seq:
        last_hash = await store.event_hash(session, to_seq)
        assert last_hash is not None
        final = signer.sign(to_seq, last_hash, utcnow())
    header = {
        "type": "header",
        "format": FORMAT_NAME,
        "version": 1,
        "from_seq": from_seq,
        "to_seq": to_seq,
        "generated_at": final.time if final else None,
        "hash": "sha256",
        "canonicalization": "RFC8785",
        "signature": "Ed25519",
        "key_id": signer.key_id,
        "public_key": public_key_b64(signer.public_key),
    }
    # The header is signed so a verifier can trust its range: without it, dropping the first
    # events of a full export would leave a valid-looking suffix.
    header["header_signature"] = signer.sign_document(header)
    held = await store.checkpoints(session, from_seq=from_seq, to_seq=to_seq)
    if from_seq > 1 and final is not None:
        # Anchor a partial export to the chain before it: a checkpoint over event
        # from_seq - 1 pins the first event's prev_hash, so it is not taken on trust.
        anchor_hash = await store.event_hash(session, from_seq - 1)
        assert anchor_hash is not None
        held.insert(0, signer.sign(from_seq - 1, anchor_hash, utcnow()))
    return ExportPlan(from_seq, to_seq, header, held, final)


def _line(obj: dict[str, Any]) -> bytes:
    return canonical(obj) + b"\n"


async def ndjson_chunks(session: AsyncSession, plan: ExportPlan) -> AsyncIterator[bytes]:
    yield _line(plan.header)
    if plan.to_seq >= plan.from_seq:
        buffer: list[bytes] = []
        async for record in store.stream_records(
            session, plan.from_seq, plan.to_seq, release_between_batches=True
        ):
            buffer.append(_line(record.to_json()))
            if len(buffer) >= 500:
                yield b"".join(buffer)
                buffer = []
        if buffer:
            yield b"".join(buffer)
    for checkpoint in plan.checkpoints:
        yield _line(checkpoint.to_json())
    if plan.final is not None:
        yield _line({**plan.final.to_json(), "export": True})


def _csv_row(values: Iterable[Any]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(values)
    return out.getvalue()


def _event_csv(record: EventRecord) -> list[Any]:
    refs = record.refs
    return [
        "event",
        record.seq,
        record.prev_hash,
        record.hash,
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
    return row


async def csv_chunks(session: AsyncSession, plan: ExportPlan) -> AsyncIterator[bytes]:
    yield _csv_row(CSV_COLUMNS).encode()
    header_row: list[Any] = [""] * len(CSV_COLUMNS)
    header_row[0] = "header"
    header_row[CSV_COLUMNS.index("data")] = canonical(plan.header).decode()
    yield _csv_row(header_row).encode()
    if plan.to_seq >= plan.from_seq:
        buffer: list[str] = []
        async for record in store.stream_records(
            session, plan.from_seq, plan.to_seq, release_between_batches=True
        ):
            buffer.append(_csv_row(_event_csv(record)))
            if len(buffer) >= 500:
                yield "".join(buffer).encode()
                buffer = []
        if buffer:
            yield "".join(buffer).encode()
    for checkpoint in plan.checkpoints:
        yield _csv_row(_checkpoint_csv(checkpoint, "checkpoint")).encode()
    if plan.final is not None:
        yield _csv_row(_checkpoint_csv(plan.final, "export_checkpoint")).encode()


def chunks(session: AsyncSession, plan: ExportPlan, fmt: Format) -> AsyncIterator[bytes]:
    """The export's bytes. ``session`` must be the stream's own: it is released between
    batches."""
    return ndjson_chunks(session, plan) if fmt == "ndjson" else csv_chunks(session, plan)


# -- reading an export (offline) ------------------------------------------------------------


@dataclass(slots=True)
class ExportFile:
    header: dict[str, Any] = field(default_factory=dict)
    events: list[EventRecord] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)


class ExportUnreadable(ValueError):
    pass


def _iter_ndjson(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ExportUnreadable(f"line {number}: not JSON") from exc
        if not isinstance(obj, dict):
            raise ExportUnreadable(f"line {number}: not an object")
        yield obj


def _iter_csv(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    for row in csv.DictReader(lines):
        kind = row.get("record")
        if kind == "header":
            yield json.loads(row["data"])
        elif kind == "event":
            yield {
                "type": "event",
                "seq": int(row["seq"]),
                "prev_hash": row["prev_hash"],
                "hash": row["hash"],
                "occurred_at": row["occurred_at"],
                "action": row["action"],
                "actor": {
                    "type": row["actor_type"],
                    "id": row["actor_id"] or None,
                    "role": row["actor_role"] or None,
                },
                "refs": {k: row[k] or None for k in store_ref_keys()},
                "data": json.loads(row["data"]),
            }
        elif kind in ("checkpoint", "export_checkpoint"):
            yield {
                "type": "checkpoint",
                "seq": row["seq"],
                "hash": row["hash"],
                "time": row["occurred_at"],
                "key_id": row["key_id"],
                "signature": row["signature"],
            }


def store_ref_keys() -> tuple[str, ...]:
    from app.audit.chain import REF_KEYS

    return REF_KEYS


def read_export(lines: Iterable[str], fmt: Format = "ndjson") -> ExportFile:
    """Parse an export into memory. (Use :func:`verify_export` for bounded memory.)"""
    export = ExportFile()
    for obj in _iter_ndjson(lines) if fmt == "ndjson" else _iter_csv(lines):
        kind = obj.get("type")
        if kind == "header":
            export.header = obj
        elif kind == "event":
            export.events.append(EventRecord.from_json(obj))
        elif kind == "checkpoint":
            export.checkpoints.append(Checkpoint.from_json(obj))
    return export


def read_checkpoints(lines: Iterable[str]) -> list[Checkpoint]:
    """A checkpoints file an auditor kept: NDJSON checkpoint lines (other lines ignored)."""
    return [Checkpoint.from_json(o) for o in _iter_ndjson(lines) if o.get("type") == "checkpoint"]


def _records(path: Path, fmt: Format) -> Iterator[dict[str, Any]]:
    with path.open(newline="") as handle:
        yield from _iter_ndjson(handle) if fmt == "ndjson" else _iter_csv(handle)


def verify_export_file(
    path: Path, fmt: Format, public_key: Any, held: Iterable[Checkpoint] = ()
) -> VerifyReport:
    """Verify an export file in bounded memory: a first pass reads the header and the
    checkpoints (they come last in the file), a second streams the events."""
    header: dict[str, Any] = {}
    found: list[Checkpoint] = []
    for obj in _records(path, fmt):
        if obj.get("type") == "header":
            header = obj
        elif obj.get("type") == "checkpoint":
            found.append(Checkpoint.from_json(obj))
    verifier = _start(header, [*found, *held], public_key)
    for obj in _records(path, fmt):
        if obj.get("type") != "event":
            continue
        try:
            record = EventRecord.from_json(obj)
        except KeyError:
            verifier.fail_malformed()
            break
        if not verifier.feed(record):
            break
    return verifier.finish()


def _start(header: dict[str, Any], checkpoints: list[Checkpoint], public_key: Any) -> ChainVerifier:
    start = 1
    header_ok = True
    if header:
        unsigned = {k: v for k, v in header.items() if k != "header_signature"}
        signature = str(header.get("header_signature", ""))
        header_ok = document_signature_valid(unsigned, signature, public_key)
        if header_ok:
            start = int(header["from_seq"])
    verifier = ChainVerifier(public_key, checkpoints, start_seq=start)
    if not header_ok:
        verifier.fail_header()
    return verifier


def verify_export(
    export: ExportFile,
    public_key: Any,
    held: Iterable[Checkpoint] = (),
) -> VerifyReport:
    """Verify an export with only the public key (and checkpoints the auditor kept).

    The header's range is not trusted: a missing tail is caught by the export's own signed
    checkpoint, or by any held checkpoint beyond the last event.
    """
    verifier = _start(export.header, [*export.checkpoints, *held], public_key)
    for record in export.events:
        if not verifier.feed(record):
            break
    return verifier.finish()
