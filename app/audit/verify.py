"""Verification: the same walk online (events from the database) and offline (an export).

The walk needs nothing but the events in order, the checkpoints, and the public key. It
reports the first bad sequence number: the smallest ``n`` such that the events before ``n``
form a valid chain and what stands at position ``n`` is not a valid event ``n``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from app.audit.chain import GENESIS_HASH, Checkpoint, EventRecord, signature_valid


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
    #: ``conflicting_checkpoints``, ``bad_header_signature``.
    reason: str | None = None
    detail: str | None = None
    #: The checkpoint that revealed the problem, when one did.
    checkpoint_seq: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class ChainVerifier:
    """Feed events in file order, then call :meth:`finish`.

    ``start_seq`` and ``anchor_hash`` verify a segment (an export of ``from_seq`` onward):
    without an anchor, the first event's ``prev_hash`` is taken on trust unless a checkpoint
    at ``start_seq - 1`` pins it.
    """

    def __init__(
        self,
        public_key: Ed25519PublicKey,
        checkpoints: Iterable[Checkpoint] = (),
        *,
        start_seq: int = 1,
        anchor_hash: str | None = None,
    ) -> None:
        self.public_key = public_key
        self.start_seq = start_seq
        self.next_seq = start_seq
        self.prev_hash = GENESIS_HASH if start_seq == 1 else anchor_hash
        self.events_checked = 0
        self.head_hash: str | None = None
        self.bad: tuple[int | None, str, str, int | None] | None = None
        self.pinned: dict[int, str] = {}
        self.last_matched_checkpoint = start_seq - 1
        self.checkpoints_checked = 0
        self._check_checkpoints(list(checkpoints))

    def _fail(self, seq: int | None, reason: str, detail: str, cp: int | None = None) -> None:
        if self.bad is None:
            self.bad = (seq, reason, detail, cp)

    def _check_checkpoints(self, checkpoints: list[Checkpoint]) -> None:
        for cp in sorted(checkpoints, key=lambda c: c.seq):
            self.checkpoints_checked += 1
            if not signature_valid(cp, self.public_key):
                self._fail(None, "bad_checkpoint_signature", "signature does not verify", cp.seq)
                return
            known = self.pinned.get(cp.seq)
            if known is not None and known != cp.hash:
                # Two validly signed heads for one seq: the chain was forked or rewritten.
                self._fail(cp.seq, "conflicting_checkpoints", "two signed hashes", cp.seq)
                return
            self.pinned[cp.seq] = cp.hash
        anchor = self.pinned.get(self.start_seq - 1)
        if anchor is not None:
            if self.prev_hash is not None and self.prev_hash != anchor:
                self._fail(
                    self.start_seq, "checkpoint_mismatch", "anchor differs", self.start_seq - 1
                )
            self.prev_hash = anchor

    def fail_header(self) -> None:
        self._fail(None, "bad_header_signature", "the export header's signature does not verify")

    def fail_malformed(self) -> None:
        self._fail(self.next_seq, "malformed", "an event record lacks a field")

    def feed(self, event: EventRecord) -> bool:
        """Check one event; return False once the chain is broken (later events are moot)."""
        if self.bad is not None:
            return False
        expected = self.next_seq
        try:
            if type(event.seq) is not int or event.seq != expected:
                self._fail(expected, "seq_mismatch", f"found seq {event.seq!r}")
                return False
            if self.prev_hash is None:
                self.prev_hash = event.prev_hash  # an unanchored segment
            if event.prev_hash != self.prev_hash:
                self._fail(expected, "prev_hash_mismatch", "does not link to its predecessor")
                return False
            if event.compute_hash() != event.hash:
                self._fail(expected, "hash_mismatch", "content does not match its hash")
                return False
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            self._fail(expected, "malformed", type(exc).__name__)
            return False
        pinned = self.pinned.get(expected)
        if pinned is not None:
            if pinned != event.hash:
                # The chain is internally consistent but not the one that was signed: it was
                # rewritten somewhere after the last checkpoint that still matched.
                self._fail(
                    self.last_matched_checkpoint + 1,
                    "checkpoint_mismatch",
                    "the chain differs from a signed checkpoint",
                    expected,
                )
                return False
            self.last_matched_checkpoint = expected
        self.prev_hash = event.hash
        self.head_hash = event.hash
        self.next_seq = expected + 1
        self.events_checked += 1
        return True

    def finish(self) -> VerifyReport:
        last_seq = self.next_seq - 1 if self.events_checked else None
        if self.bad is None:
            beyond = [seq for seq in self.pinned if seq >= self.next_seq]
            if beyond:
                self._fail(
                    self.next_seq,
                    "truncated",
                    f"a signed checkpoint covers seq {min(beyond)} but the chain ends before it",
                    min(beyond),
                )
        report = VerifyReport(
            ok=self.bad is None,
            events_checked=self.events_checked,
            first_seq=self.start_seq if self.events_checked else None,
            last_seq=last_seq,
            head_hash=self.head_hash,
            checkpoints_checked=self.checkpoints_checked,
        )
        if self.bad is not None:
            report.first_bad_seq, report.reason, report.detail, report.checkpoint_seq = self.bad
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
