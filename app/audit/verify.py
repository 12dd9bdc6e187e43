"""Verification: the same walk online (events from the database) and offline (an export).

The walk needs nothing but the events in order, the checkpoints, and the public key. It
reports the first bad sequence number: the smallest ``n`` such that the events before ``n``
form a valid chain and what stands at position ``n`` is not a valid event ``n``.

Checkpoints come from two places: the log's own (stored in the database, or carried by the
export) and the ones an auditor or a witness *held* outside it. A report names the first
checkpoint the events contradict and where it came from, and says plainly which held
checkpoints the events could not be checked against, and what to do about it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from app.audit import merkle
from app.audit.chain import GENESIS_HASH, Checkpoint, EventRecord, signature_valid
from app.compact import Unreadable


@dataclass(slots=True)
class VerifyReport:
    ok: bool
    events_checked: int
    first_seq: int | None
    last_seq: int | None
    head_hash: str | None
    checkpoints_checked: int
    #: The first sequence number that is not part of a valid chain, or ``None``.
    first_bad_seq: int | None = None
    #: ``seq_mismatch``, ``prev_hash_mismatch``, ``hash_mismatch``, ``malformed``,
    #: ``checkpoint_mismatch``, ``truncated``, ``bad_checkpoint_signature``,
    #: ``conflicting_checkpoints``, ``bad_header_signature``, ``missing_export_checkpoint``,
    #: ``beyond_range``, ``empty_export``.
    reason: str | None = None
    detail: str | None = None
    #: The checkpoint that revealed the problem, when one did, and where it came from:
    #: ``held`` (given by the auditor or a witness), ``export`` or ``database``.
    checkpoint_seq: int | None = None
    checkpoint_source: str | None = None
    #: Held checkpoints these events could not be checked against (outside their range).
    unchecked_checkpoints: list[int] = field(default_factory=list)
    #: What to do about each unchecked checkpoint, in plain words.
    advice: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def verdict(self) -> str:
        """One line for a person: what the report means."""
        if self.ok:
            line = f"INTACT: {self.events_checked} events"
            if self.last_seq is not None:
                line += f", seq {self.first_seq}..{self.last_seq}"
            line += f", against {self.checkpoints_checked} checkpoints"
            if self.unchecked_checkpoints:
                line += f" ({len(self.unchecked_checkpoints)} held checkpoints not covered)"
            return line
        where = f" at seq {self.first_bad_seq}" if self.first_bad_seq is not None else ""
        by = ""
        if self.checkpoint_seq is not None:
            by = f"; shown by the {self.checkpoint_source or 'stored'} checkpoint at seq "
            by += str(self.checkpoint_seq)
        return f"NOT INTACT{where} ({self.reason}): {self.detail}{by}"


@dataclass(slots=True)
class _Pin:
    #: The chain hash at a seq (version 1 checkpoints) or the tree root at a size.
    value: str | bytes
    source: str


class ChainVerifier:
    """Feed events in file order, then call :meth:`finish`.

    ``start_seq`` and ``anchor_hash`` verify a segment (an export of ``from_seq`` onward):
    without an anchor, the first event's ``prev_hash`` is taken on trust unless a checkpoint
    at ``start_seq - 1`` pins it. ``end_seq`` is the last seq the events must reach (an
    export's signed range). ``log_size`` is how many events the log held when the events
    were read: a checkpoint beyond it means events were lost (``truncated``); one beyond
    the events but within it only lies outside their range, and is reported as unchecked.

    Tree checkpoints pin the Merkle root at their size: the walk keeps the compact range of
    the leaves so far (``prefix``: the one before ``start_seq``, for a segment) and
    compares its root at each pinned size. ``consistency`` maps a size beyond the events to
    an RFC 9162 consistency proof from the last event's size to it, so a later checkpoint
    (an export's latest stored one) is checked without its events.
    """

    def __init__(
        self,
        public_key: Ed25519PublicKey,
        checkpoints: Iterable[Checkpoint] = (),
        *,
        held: Iterable[Checkpoint] = (),
        start_seq: int = 1,
        anchor_hash: str | None = None,
        end_seq: int | None = None,
        log_size: int | None = None,
        own_source: str = "export",
        prefix: merkle.CompactRange | None = None,
        consistency: dict[int, list[bytes]] | None = None,
    ) -> None:
        self.public_key = public_key
        self.start_seq = start_seq
        self.end_seq = end_seq
        self.log_size = log_size
        self.next_seq = start_seq
        self.prev_hash = GENESIS_HASH if start_seq == 1 else anchor_hash
        self.events_checked = 0
        self.head_hash: str | None = None
        self.bad: tuple[int | None, str, str, int | None, str | None] | None = None
        self.pinned: dict[int, _Pin] = {}
        self.roots: dict[int, _Pin] = {}
        self.consistency = consistency or {}
        self.compact = merkle.CompactRange() if start_seq == 1 else prefix and prefix.copy()
        if self.compact is not None and self.compact.size != start_seq - 1:
            self.compact = None
        self.last_matched_checkpoint = start_seq - 1
        self.checkpoints_checked = 0
        #: A failure to report at the end unless the walk finds an earlier one.
        self.deferred: tuple[str, str] | None = None
        self._check_checkpoints(
            [(c, own_source) for c in checkpoints] + [(c, "held") for c in held]
        )

    def _fail(
        self,
        seq: int | None,
        reason: str,
        detail: str,
        cp: int | None = None,
        source: str | None = None,
    ) -> None:
        if self.bad is None:
            self.bad = (seq, reason, detail, cp, source)

    def _check_checkpoints(self, checkpoints: list[tuple[Checkpoint, str]]) -> None:
        for cp, source in sorted(checkpoints, key=lambda c: c[0].seq):
            self.checkpoints_checked += 1
            if not signature_valid(cp, self.public_key):
                self._fail(
                    None, "bad_checkpoint_signature", "signature does not verify", cp.seq, source
                )
                return
            pins = self.pinned if cp.note is None else self.roots
            value: str | bytes = cp.hash if cp.note is None else (cp.root_bytes or b"")
            known = pins.get(cp.seq)
            if known is not None and known.value != value:
                # Two validly signed heads for one size: the log was forked or rewritten.
                self._fail(cp.seq, "conflicting_checkpoints", "two signed heads", cp.seq, source)
                return
            if known is None or source == "held":
                pins[cp.seq] = _Pin(value, source)
        anchor = self.pinned.get(self.start_seq - 1)
        if self.compact is not None and self.compact.size:
            self._check_root(self.compact.size, self.start_seq)
        if anchor is not None:
            assert isinstance(anchor.value, str)
            if self.prev_hash is not None and self.prev_hash != anchor.value:
                self._fail(
                    self.start_seq,
                    "checkpoint_mismatch",
                    "anchor differs",
                    self.start_seq - 1,
                    anchor.source,
                )
            self.prev_hash = anchor.value

    def _check_root(self, size: int, at: int) -> bool:
        """Compare the running root with a tree checkpoint at ``size``, if there is one."""
        pin = self.roots.get(size)
        if pin is None or self.compact is None:
            return True
        if self.compact.root() != pin.value:
            self._fail(
                self.last_matched_checkpoint + 1 if at > self.start_seq else at,
                "checkpoint_mismatch",
                "the events differ from a signed checkpoint's tree",
                size,
                pin.source,
            )
            return False
        return True

    def fail_header(self) -> None:
        self._fail(None, "bad_header_signature", "the export header's signature does not verify")

    def fail_malformed(self, detail: str = "an event record lacks a field") -> None:
        self._fail(self.next_seq, "malformed", detail)

    def fail(self, reason: str, detail: str) -> None:
        """A failure the caller found at this point of the walk (e.g. an error record)."""
        self._fail(self.next_seq, reason, detail)

    def fail_at_end(self, reason: str, detail: str) -> None:
        """A failure to report if the walk finds none before it (e.g. the export lacks its
        signed last checkpoint: an edit found in the walk says more)."""
        self.deferred = (reason, detail)

    def feed(self, event: EventRecord, canonical: bytes | None = None) -> bool:
        """Check one event; return False once the chain is broken (later events are moot).
        ``canonical`` is ``event.canonical_body()`` when the caller has it already."""
        if self.bad is not None:
            return False
        expected = self.next_seq
        if not self._within_range(expected):
            return False
        try:
            if type(event.seq) is not int or event.seq != expected:
                self._fail(expected, "seq_mismatch", f"found seq {event.seq!r}")
                return False
            if not self._links(expected, event.prev_hash):
                return False
            if type(event.data) is Unreadable:
                # Stored bytes that do not read (migration 0014): nothing here can be proved.
                self._fail(expected, "data_unreadable", f"its stored data: {event.data.detail}")
                return False
            body = canonical if canonical is not None else event.canonical_body()
            digest = hashlib.sha256(body).digest()
            if digest.hex() != event.hash:
                self._fail(expected, "hash_mismatch", "content does not match its hash")
                return False
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            self._fail(expected, "malformed", type(exc).__name__)
            return False
        return self._accept(expected, event.hash, digest)

    def feed_hashed(self, seq: int, prev_hash: str, hash_hex: str, digest: bytes) -> bool:
        """Check one event whose canonical bytes the caller hashed itself: ``digest`` is
        their SHA-256 and ``hash_hex`` its lowercase hex (the offline checker's fast pass,
        app.audit.reader). The same checks as :meth:`feed` from there on."""
        expected = self.next_seq
        if (
            self.bad is None
            and seq == expected
            and prev_hash == self.prev_hash
            and (self.end_seq is None or expected <= self.end_seq)
        ):
            return self._accept(expected, hash_hex, digest)
        # Anything unusual: the same checks as feed, in the same order.
        if self.bad is not None or not self._within_range(expected):
            return False
        if seq != expected:
            self._fail(expected, "seq_mismatch", f"found seq {seq!r}")
            return False
        if not self._links(expected, prev_hash):
            return False
        return self._accept(expected, hash_hex, digest)

    def _within_range(self, expected: int) -> bool:
        if self.end_seq is not None and expected > self.end_seq:
            self._fail(
                expected,
                "beyond_range",
                f"an event follows seq {self.end_seq}, the end of the export's signed range",
            )
            return False
        return True

    def _links(self, expected: int, prev_hash: Any) -> bool:
        if self.prev_hash is None:
            self.prev_hash = prev_hash  # an unanchored segment
        if prev_hash != self.prev_hash:
            self._fail(expected, "prev_hash_mismatch", "does not link to its predecessor")
            return False
        return True

    def _accept(self, expected: int, hash_hex: str, digest: bytes) -> bool:
        """Event ``expected`` holds (its hash is ``hash_hex``, ``digest`` in bytes): extend
        the tree and compare both with the checkpoints pinned at its seq."""
        compact = self.compact
        if compact is not None:
            compact.append_entry(digest)
            if expected in self.roots:
                if not self._check_root(expected, expected):
                    return False
                self.last_matched_checkpoint = expected
        pinned = self.pinned.get(expected)
        if pinned is not None:
            if pinned.value != hash_hex:
                # The chain is internally consistent but not the one that was signed: it was
                # rewritten somewhere after the last checkpoint that still matched.
                self._fail(
                    self.last_matched_checkpoint + 1,
                    "checkpoint_mismatch",
                    "the chain differs from a signed checkpoint",
                    expected,
                    pinned.source,
                )
                return False
            self.last_matched_checkpoint = expected
        self.prev_hash = hash_hex
        self.head_hash = hash_hex
        self.next_seq = expected + 1
        self.events_checked += 1
        return True

    def _finish_range(self) -> None:
        last = self.next_seq - 1
        if self.end_seq is None or self.bad is not None:
            return
        if self.end_seq < self.start_seq:
            self._fail(None, "empty_export", "the export holds no events, so it proves nothing")
        elif last < self.end_seq:
            self._fail(
                self.next_seq,
                "truncated",
                f"the export's signed header promises seq {self.start_seq}..{self.end_seq}, "
                f"but its events end at seq {last}: it was cut short",
            )

    def _finish_beyond(self, report: VerifyReport) -> None:
        """Checkpoints the events did not reach: lost events, checked by a consistency
        proof, or just outside the range."""
        last = self.next_seq - 1
        size = self.log_size if self.log_size is not None else last
        pins = {**{s: (p, False) for s, p in self.pinned.items()}}
        pins.update({s: (p, True) for s, p in self.roots.items()})
        for seq in sorted(pins):
            pin, is_root = pins[seq]
            if seq < self.start_seq - 1 or (seq == self.start_seq - 1 and not is_root):
                if pin.source == "held" and not (seq == self.start_seq - 1 and is_root):
                    report.unchecked_checkpoints.append(seq)
                    report.advice.append(
                        f"the checkpoint at seq {seq} is before this export's range "
                        f"(seq {self.start_seq}..{last}); export from seq 1 to check it"
                    )
                continue
            if seq <= last:
                continue
            if seq > size:
                self._fail(
                    last + 1,
                    "truncated",
                    f"a signed checkpoint covers seq {seq} but the log holds {size} events: "
                    "events were removed from its end",
                    seq,
                    pin.source,
                )
                return
            proof = self.consistency.get(seq)
            if is_root and proof is not None and self.compact is not None:
                assert isinstance(pin.value, bytes)
                if merkle.verify_consistency(last, seq, self.compact.root(), pin.value, proof):
                    continue
                self._fail(
                    self.last_matched_checkpoint + 1,
                    "checkpoint_mismatch",
                    f"the events are not a prefix of the log signed at size {seq} (the "
                    "consistency proof fails)",
                    seq,
                    pin.source,
                )
                return
            report.unchecked_checkpoints.append(seq)
            report.advice.append(
                f"the checkpoint at seq {seq} is beyond this export's range (it ends at seq "
                f"{last}); export up to seq {seq} to check it"
            )

    def finish(self) -> VerifyReport:
        last_seq = self.next_seq - 1 if self.events_checked else None
        report = VerifyReport(
            ok=False,
            events_checked=self.events_checked,
            first_seq=self.start_seq if self.events_checked else None,
            last_seq=last_seq,
            head_hash=self.head_hash,
            checkpoints_checked=self.checkpoints_checked,
        )
        self._finish_range()
        if self.bad is None and self.deferred is not None:
            self._fail(None, *self.deferred)
        if self.bad is None:
            self._finish_beyond(report)
        report.ok = self.bad is None
        if self.bad is not None:
            (
                report.first_bad_seq,
                report.reason,
                report.detail,
                report.checkpoint_seq,
                report.checkpoint_source,
            ) = self.bad
        return report


def verify_records(
    events: Iterable[EventRecord],
    checkpoints: Iterable[Checkpoint],
    public_key: Ed25519PublicKey,
    *,
    start_seq: int = 1,
    anchor_hash: str | None = None,
) -> VerifyReport:
    verifier = ChainVerifier(public_key, checkpoints, start_seq=start_seq, anchor_hash=anchor_hash)
    for event in events:
        if not verifier.feed(event):
            break
    return verifier.finish()
