"""Exports (NDJSON, CSV), streamed and verified as they stream; and the offline reader.

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
import gc
import io
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import orjson
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.audit import merkle, store, writer
from app.audit.chain import (
    REF_KEYS,
    Checkpoint,
    EventRecord,
    Signer,
    canonical,
    document_signature_valid,
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
) -> AsyncIterator[tuple[EventRecord, bytes]]:
    """The range's events, with their canonical bodies, checked on their way out; the
    export's checkpoint is signed only when every one of them held."""
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
        records = store.stream_records(
            session, plan.from_seq, plan.to_seq, release_between_batches=True
        )
        async with contextlib.aclosing(records):
            async for record in records:
                body = record.canonical_body()
                if not verifier.feed(record, body):
                    break
                yield record, body
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


def _event_line(record: EventRecord, body: bytes) -> bytes:
    """An event line from the canonical body just hashed: ``type`` and ``hash`` first, then
    the body's members (the same object as ``record.to_json()``, written once)."""
    return b'{"type":"event","hash":"' + record.hash.encode() + b'",' + body[1:] + b"\n"


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
    buffer: list[bytes] = []
    async for record, body in _verified(session, plan):
        buffer.append(_event_line(record, body))
        if len(buffer) >= 1000:
            yield b"".join(buffer)
            buffer = []
    if buffer:
        yield b"".join(buffer)
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
    count = 0
    async for record, _body in _verified(session, plan):
        rows.writerow(_event_csv(record))
        count += 1
        if count % 1000 == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode()
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


# -- reading an export (offline) ------------------------------------------------------------


class ExportUnreadable(ValueError):
    """The file is not a Ruta audit export, or cannot be read at all (exit code 2)."""


@dataclass(slots=True)
class ExportFile:
    header: dict[str, Any] = field(default_factory=dict)
    events: list[EventRecord] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    #: The checkpoint the service signed over the export's last event.
    final: Checkpoint | None = None
    #: The service's error record, when it found the chain broken while exporting.
    error: dict[str, Any] | None = None
    #: The tree before the first event (a partial export), and consistency proofs from
    #: the last event's size, by the size they reach.
    prefix: merkle.CompactRange | None = None
    anchor: tuple[str, list[bytes]] | None = None
    consistency: dict[int, list[bytes]] = field(default_factory=dict)

    def take(self, obj: dict[str, Any], where: str) -> None:
        """Keep a non-event record: a checkpoint, the tree prefix, a consistency proof."""
        kind = obj.get("type")
        if kind == "checkpoint":
            checkpoint = _checkpoint(obj, where)
            if obj.get("export") is True:
                self.final = checkpoint
            else:
                self.checkpoints.append(checkpoint)
        elif kind == "tree_prefix":
            self.prefix = _prefix(obj, where)
            self.anchor = (str(obj.get("chain_hash")), _hashes(obj.get("chain_hash_proof"), where))
        elif kind == "consistency":
            size, proof = _consistency(obj, where)
            self.consistency[size] = proof
        elif kind == "error":
            self.error = obj


#: Event lines start so (as Ruta writes them, or with sorted keys); the first pass skips
#: them unparsed. Any other line is parsed, so an event written otherwise costs time only.
_EVENT_PREFIXES = (b'{"type":"event"', b'{"action"')


def _parse_ndjson(line: bytes, number: int) -> dict[str, Any]:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise ExportUnreadable(f"line {number} is not JSON") from None
    if not isinstance(obj, dict):
        raise ExportUnreadable(f"line {number} is not a JSON object")
    return obj


def _iter_ndjson(lines: Iterable[bytes | str], *, skip_events: bool = False) -> Iterator[Any]:
    """Records as dicts; with ``skip_events``, event lines after the first record are
    passed over unparsed."""
    first = True
    for number, raw in enumerate(lines, start=1):
        line = raw.encode() if isinstance(raw, str) else raw
        if not line.strip():
            continue
        if skip_events and not first and line.startswith(_EVENT_PREFIXES):
            continue
        first = False
        yield _parse_ndjson(line, number)


def _csv_event(row: dict[str, str]) -> dict[str, Any]:
    return {
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
        "refs": {k: row[k] or None for k in REF_KEYS},
        "data": orjson.loads(row["data"]),
    }


def _iter_csv(lines: Iterable[str], *, skip_events: bool = False) -> Iterator[Any]:
    reader = csv.DictReader(lines)
    missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ExportUnreadable(f"not a Ruta audit CSV export: no column {', '.join(missing)}")
    for row in reader:
        kind = row.get("record")
        if kind == "event":
            if skip_events:
                continue
            try:
                yield _csv_event(row)
            except (ValueError, TypeError, orjson.JSONDecodeError):
                yield {"type": "malformed", "line": reader.line_num}
        elif kind in ("header", "error", "tree_prefix", "consistency"):
            try:
                yield orjson.loads(row["data"])
            except orjson.JSONDecodeError:
                raise ExportUnreadable(f"line {reader.line_num}: its data is not JSON") from None
        elif kind in ("checkpoint", "export_checkpoint"):
            try:
                tree = orjson.loads(row["data"]) if row["data"] else {}
            except orjson.JSONDecodeError:
                tree = {}
            yield {
                "type": "checkpoint",
                "seq": row["seq"],
                "hash": row["hash"],
                "time": row["occurred_at"],
                "key_id": row["key_id"],
                "signature": row["signature"],
                **(tree if isinstance(tree, dict) else {}),
                **({"export": True} if kind == "export_checkpoint" else {}),
            }


def _hashes(values: Any, where: str) -> list[bytes]:
    if not isinstance(values, list):
        raise ExportUnreadable(f"{where}: a list of hashes was expected")
    try:
        out = [base64.b64decode(str(v), validate=True) for v in values]
    except ValueError:
        raise ExportUnreadable(f"{where}: a hash is not base64") from None
    return out


def _prefix(obj: dict[str, Any], where: str) -> merkle.CompactRange:
    try:
        return merkle.CompactRange(int(obj["size"]), _hashes(obj.get("hashes"), where))
    except (KeyError, TypeError, ValueError):
        raise ExportUnreadable(f"{where}: the tree prefix is not well formed") from None


def _consistency(obj: dict[str, Any], where: str) -> tuple[int, list[bytes]]:
    try:
        return int(obj["to_size"]), _hashes(obj.get("proof"), where)
    except (KeyError, TypeError, ValueError):
        raise ExportUnreadable(f"{where}: a consistency proof is not well formed") from None


def _checkpoint(obj: dict[str, Any], where: str) -> Checkpoint:
    try:
        return Checkpoint.from_json(obj)
    except (KeyError, TypeError, ValueError):
        raise ExportUnreadable(f"{where}: a checkpoint record lacks a field") from None


def read_export(lines: Iterable[Any], fmt: Format = "ndjson") -> ExportFile:
    """Parse an export into memory (tests, small files; :func:`verify_export_file` streams)."""
    export = ExportFile()
    for obj in _iter_ndjson(lines) if fmt == "ndjson" else _iter_csv(lines):
        kind = obj.get("type")
        if kind == "header":
            export.header = obj
        elif kind == "event":
            export.events.append(EventRecord.from_json(obj))
        else:
            export.take(obj, "export")
    return export


def read_checkpoints(lines: Iterable[Any], where: str = "checkpoints") -> list[Checkpoint]:
    """A checkpoints file an auditor or a witness kept: NDJSON checkpoint lines (other
    lines, e.g. an export's events, are ignored)."""
    return [
        _checkpoint(obj, where)
        for obj in _iter_ndjson(lines, skip_events=True)
        if obj.get("type") == "checkpoint"
    ]


def sniff_format(path: Path) -> Format:
    """NDJSON or CSV, from the first bytes; :class:`ExportUnreadable` when neither."""
    try:
        with path.open("rb") as handle:
            start = handle.read(4096)
    except OSError as exc:
        raise ExportUnreadable(f"cannot read {path}: {exc.strerror or exc}") from None
    text = start.lstrip()
    if not text:
        raise ExportUnreadable(
            "the file is empty: an export always starts with a signed header (was the "
            "download interrupted, or refused?)"
        )
    if text.startswith(b"{"):
        return "ndjson"
    if text.startswith(b"record,"):
        return "csv"
    raise ExportUnreadable("not a Ruta audit export (neither its NDJSON nor its CSV form)")


def _records(path: Path, fmt: Format, *, skip_events: bool = False) -> Iterator[Any]:
    try:
        if fmt == "ndjson":
            with path.open("rb") as handle:
                yield from _iter_ndjson(handle, skip_events=skip_events)
        else:
            with path.open(newline="", encoding="utf-8") as handle:
                yield from _iter_csv(handle, skip_events=skip_events)
    except UnicodeDecodeError:
        raise ExportUnreadable("the file is not UTF-8 text (binary data?)") from None
    except csv.Error as exc:
        raise ExportUnreadable(f"not a readable CSV file ({exc})") from None


def _require_header(obj: dict[str, Any]) -> dict[str, Any]:
    if obj.get("type") == "header" and obj.get("format") == FORMAT_NAME:
        return obj
    if "status" in obj and "title" in obj:
        raise ExportUnreadable(
            f"not an export: the file holds an error response (HTTP {obj.get('status')}: "
            f"{str(obj.get('title'))[:80]}); download the export again"
        )
    raise ExportUnreadable("not an export: it does not start with a Ruta audit export header")


def _preamble(path: Path, fmt: Format) -> ExportFile:
    """First pass: the header (which must come first), the checkpoints and the export's
    own checkpoint; event lines are skipped unparsed."""
    export = ExportFile()
    records = _records(path, fmt, skip_events=True)
    first = next(records, None)
    if first is None:
        raise ExportUnreadable("the file holds no records: an export starts with its header")
    export.header = _require_header(first)
    try:
        for obj in records:
            if obj.get("type") != "error":
                export.take(obj, str(path))
    except ExportUnreadable:
        pass  # a damaged line: the second pass reports it at its place in the chain
    return export


def _start(
    export: ExportFile, public_key: Ed25519PublicKey, held: Iterable[Checkpoint]
) -> ChainVerifier:
    """A verifier for the export's signed range; refuses what the export cannot prove."""
    header = export.header
    unsigned = {k: v for k, v in header.items() if k != "header_signature"}
    header_ok = document_signature_valid(
        unsigned, str(header.get("header_signature", "")), public_key
    )
    try:
        start, end = int(header["from_seq"]), int(header["to_seq"])
        log_size = int(header.get("log_size", end))
    except (KeyError, TypeError, ValueError):
        header_ok, start, end, log_size = False, 1, 0, 0
    own = list(export.checkpoints)
    if export.final is not None:
        own.append(export.final)
    consistency = export.consistency if end >= start else {}
    anchor_hash, anchor_ok = _anchor(export)
    verifier = ChainVerifier(
        public_key,
        own,
        held=held,
        start_seq=start,
        end_seq=end,
        log_size=log_size,
        prefix=export.prefix,
        consistency=consistency,
        anchor_hash=anchor_hash,
    )
    if not anchor_ok:
        verifier.fail("malformed", "the tree before the export does not hold its first link")
    if not header_ok:
        verifier.fail_header()
    elif end >= start and (export.final is None or export.final.seq != end):
        verifier.fail_at_end(
            "missing_export_checkpoint",
            f"the export has no checkpoint signed over its last event (seq {end}); "
            "without it, events edited and rehashed could not be told from the real ones",
        )
    return verifier


def _anchor(export: ExportFile) -> tuple[str | None, bool]:
    """The chain hash before a partial export's first event, proven in the tree before it
    (whose root the export's signed checkpoint covers)."""
    if export.prefix is None or export.anchor is None:
        return None, True
    chain_hash, proof = export.anchor
    size = export.prefix.size
    try:
        leaf = merkle.leaf_hash(bytes.fromhex(chain_hash))
    except ValueError:
        return None, False
    if merkle.verify_inclusion(size - 1, size, leaf, proof, export.prefix.root()):
        return chain_hash, True
    return None, False


@contextlib.contextmanager
def no_cyclic_collection() -> Iterator[None]:
    """No cyclic garbage collection while verifying: every event allocates a few objects,
    none in a cycle (reference counting frees them), and the collector would otherwise
    scan the whole heap again and again: a third of the time in a large process."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def verify_export_file(
    path: Path, fmt: Format, public_key: Ed25519PublicKey, held: Iterable[Checkpoint] = ()
) -> VerifyReport:
    """Verify an export file in bounded memory: a first pass reads the header and the
    checkpoints (they come last in the file), a second streams the events.

    Raises :class:`ExportUnreadable` when the file is not an export at all."""
    with no_cyclic_collection():
        return _verify_file(path, fmt, public_key, held)


def _verify_file(
    path: Path, fmt: Format, public_key: Ed25519PublicKey, held: Iterable[Checkpoint]
) -> VerifyReport:
    verifier = _start(_preamble(path, fmt), public_key, held)
    try:
        for obj in _records(path, fmt):
            kind = obj.get("type")
            if kind == "malformed":
                verifier.fail_malformed(f"line {obj['line']} is not a valid event row")
                break
            if kind == "error":
                _fail_on_error(verifier, obj)
                break
            if kind != "event":
                continue
            try:
                record = EventRecord.from_json(obj)
            except KeyError:
                verifier.fail_malformed()
                break
            if not verifier.feed(record):
                break
    except ExportUnreadable as exc:
        verifier.fail_malformed(str(exc))
    return verifier.finish()


def verify_export(
    export: ExportFile, public_key: Ed25519PublicKey, held: Iterable[Checkpoint] = ()
) -> VerifyReport:
    """Verify an export parsed in memory, with the same rules as :func:`verify_export_file`."""
    if not export.header:
        raise ExportUnreadable("not an export: it has no header")
    verifier = _start(export, public_key, held)
    for record in export.events:
        if not verifier.feed(record):
            break
    else:
        if export.error is not None:
            _fail_on_error(verifier, export.error)
    return verifier.finish()


def _fail_on_error(verifier: ChainVerifier, error: dict[str, Any]) -> None:
    """The service stopped the export where it found the chain broken."""
    verifier.fail(
        str(error.get("reason") or "export_failed"),
        "the service stopped this export there: " + str(error.get("detail", ""))[:200],
    )
