"""Reading an export offline: the parser and the checker behind ``ruta audit verify``.

It needs only the file and the public key (and the checkpoints an auditor or a witness
kept): no database, no settings. It refuses what it cannot prove (docs/audit.md, "Verifying
offline"): a file that is not an export (:class:`ExportUnreadable`, exit code 2), and an
export without its signed header or its signed last checkpoint, or cut short of the range
its header claims (a report that is not ``ok``, exit code 1).
"""

from __future__ import annotations

import base64
import contextlib
import csv
import gc
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from app.audit import fast, merkle
from app.audit.chain import REF_KEYS, Checkpoint, EventRecord, document_signature_valid
from app.audit.export import CSV_COLUMNS, FORMAT_NAME, Format
from app.audit.verify import ChainVerifier, VerifyReport


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
        if skip_events and not first and line.startswith(_EVENT_PREFIXES):
            continue
        if not line.strip():
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
    export, held = _preamble(path, fmt), list(held)
    if fmt == "ndjson":
        # Lines as the service writes them are hashed as they stand; anything else, and any
        # report but "intact", is left to the careful pass below (app.audit.fast).
        with path.open("rb") as handle:
            proven = fast.walk(handle, _start(export, public_key, held))
        if proven is not None:
            return proven
    verifier = _start(export, public_key, held)
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
