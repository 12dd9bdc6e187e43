"""The mutation suite: every way of tampering with a 10,000-event chain is detected, and the
first bad sequence number is the one the docs promise.

"First bad seq" is positional (docs/audit.md): the smallest n such that the events before n
form a valid chain and what stands at position n is not a valid event n.

The chain is built in memory with the same construction as the writer (the DB path is
exercised in test_store.py). To keep 10,000 x every-field x many-positions fast, each
mutated chain is verified from a snapshot of the verifier taken after the untouched prefix:
the verifier's state after a valid prefix is a pure function of that prefix. A sample of
mutations is also verified from scratch, through the export reader, to show the shortcut
agrees.
"""

from __future__ import annotations

import copy
import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.audit import Action
from app.audit.chain import GENESIS_HASH, Checkpoint, EventRecord, Signer, format_time
from app.audit.export import ExportFile, verify_export
from app.audit.verify import ChainVerifier, VerifyReport
from app.audit.writer import actor_of
from tests.audit.conftest import sample_event

N = 10_000
EVERY = 1_000
SIGNER = Signer(b"\x07" * 32)
START = datetime(2026, 11, 23, tzinfo=UTC)


def build_chain(n: int) -> tuple[list[EventRecord], list[Checkpoint]]:
    events: list[EventRecord] = []
    checkpoints: list[Checkpoint] = []
    prev = GENESIS_HASH
    for seq in range(1, n + 1):
        spec = sample_event(seq)
        refs = {
            "screening_id": _s(spec.get("screening_id")),
            "referral_id": _s(spec.get("referral_id")),
            "partner_id": spec.get("partner_id"),
            "subject_id": _s(spec.get("subject_id")),
            "request_id": spec.get("request_id"),
        }
        moment = START + timedelta(milliseconds=seq)
        record = EventRecord(
            seq=seq,
            prev_hash=prev,
            occurred_at=format_time(moment),
            action=Action(spec["action"]).value,
            actor=actor_of(spec["actor"]).to_json(),
            refs=refs,
            data=dict(spec.get("data", {})),
        )
        record.hash = record.compute_hash()
        prev = record.hash
        events.append(record)
        if seq % EVERY == 0:
            checkpoints.append(SIGNER.sign(seq, prev, moment))
    return events, checkpoints


def _s(value: object) -> str | None:
    return None if value is None else str(value)


EVENTS, CHECKPOINTS = build_chain(N)

EDGE_POSITIONS = [1, 2, 3, 999, 1000, 1001, 5000, 9998, 9999, 10000]
POSITIONS = sorted(set(EDGE_POSITIONS + random.Random(8785).sample(range(1, N + 1), 30)))


def _snapshots(positions: list[int]) -> dict[int, ChainVerifier]:
    """The verifier's state just before each position, from one walk of the real chain."""
    wanted = set(positions)
    snaps: dict[int, ChainVerifier] = {}
    verifier = ChainVerifier(SIGNER.public_key, CHECKPOINTS)
    for event in EVENTS:
        if event.seq in wanted:
            snaps[event.seq] = copy.copy(verifier)
        assert verifier.feed(event)
    return snaps


SNAPSHOTS = _snapshots(POSITIONS)


def verify_from(position: int, tail: list[EventRecord]) -> VerifyReport:
    verifier = copy.copy(SNAPSHOTS[position])
    for event in tail:
        if not verifier.feed(event):
            break
    return verifier.finish()


def verify_full(events: list[EventRecord], checkpoints: list[Checkpoint]) -> VerifyReport:
    header: dict[str, object] = {}
    return verify_export(
        ExportFile(header=header, events=events, checkpoints=checkpoints), SIGNER.public_key
    )


def _flip_hex(value: str) -> str:
    return ("1" if value[0] == "0" else "0") + value[1:]


def _other_uuid(value: str | None) -> str:
    return str(uuid.uuid4()) if value is None else str(uuid.UUID(int=uuid.UUID(value).int ^ 1))


Mutation = Callable[[EventRecord], None]

FIELD_MUTATIONS: dict[str, Mutation] = {
    "seq+1": lambda e: setattr(e, "seq", e.seq + 1),
    "seq-1": lambda e: setattr(e, "seq", e.seq - 1),
    "seq-as-text": lambda e: setattr(e, "seq", str(e.seq)),
    "prev_hash": lambda e: setattr(e, "prev_hash", _flip_hex(e.prev_hash)),
    "hash": lambda e: setattr(e, "hash", _flip_hex(e.hash)),
    "occurred_at+1us": lambda e: setattr(
        e, "occurred_at", e.occurred_at[:-2] + str((int(e.occurred_at[-2]) + 1) % 10) + "Z"
    ),
    "action": lambda e: setattr(
        e, "action", "subject.erased" if e.action != "subject.erased" else "referral.created"
    ),
    "actor.type": lambda e: e.actor.update(type="system" if e.actor["type"] != "system" else "x"),
    "actor.id": lambda e: e.actor.update(id=(e.actor["id"] or "") + "0"),
    "actor.role": lambda e: e.actor.update(role="admin" if e.actor["role"] != "admin" else None),
    "refs.screening_id": lambda e: e.refs.update(screening_id=_other_uuid(e.refs["screening_id"])),
    "refs.referral_id": lambda e: e.refs.update(referral_id=_other_uuid(e.refs["referral_id"])),
    "refs.partner_id": lambda e: e.refs.update(partner_id=(e.refs["partner_id"] or "p") + "x"),
    "refs.subject_id": lambda e: e.refs.update(subject_id=_other_uuid(e.refs["subject_id"])),
    "refs.request_id": lambda e: e.refs.update(request_id=(e.refs["request_id"] or "r") + "x"),
    "refs.removed": lambda e: e.refs.pop("request_id"),
    "data.value": lambda e: e.data.update({next(iter(e.data)): None}),
    "data.added": lambda e: e.data.update(extra="1"),
    "data.removed": lambda e: e.data.pop(next(iter(e.data))),
    "data.cleared": lambda e: e.data.clear(),
}


def mutated(position: int, mutation: Mutation) -> EventRecord:
    event = copy.deepcopy(EVENTS[position - 1])
    mutation(event)
    return event


def test_the_untouched_chain_verifies() -> None:
    report = verify_full(EVENTS, CHECKPOINTS)
    assert report.ok, report
    assert report.events_checked == N
    assert report.checkpoints_checked == N // EVERY


@pytest.mark.parametrize("field", sorted(FIELD_MUTATIONS))
def test_flipping_any_field_of_any_event_is_caught_at_that_event(field: str) -> None:
    for position in POSITIONS:
        event = mutated(position, FIELD_MUTATIONS[field])
        report = verify_from(position, [event, *EVENTS[position:]])
        assert not report.ok, (field, position)
        assert report.first_bad_seq == position, (field, position, report)


@pytest.mark.parametrize("field", sorted(FIELD_MUTATIONS))
def test_flipping_a_field_and_rehashing_breaks_the_next_link(field: str) -> None:
    """An attacker who recomputes the edited event's hash still breaks the link after it;
    at the tail, the signed checkpoint over the last event catches it."""
    for position in POSITIONS:
        event = mutated(position, FIELD_MUTATIONS[field])
        if field.startswith("seq") or field in ("prev_hash", "hash"):
            continue  # not an edit the rehash could hide: covered above
        event.hash = event.compute_hash()
        report = verify_from(position, [event, *EVENTS[position:]])
        assert not report.ok, (field, position)
        if position % EVERY:
            assert report.first_bad_seq == position + 1, (field, position, report)
            assert report.reason == "prev_hash_mismatch"
        else:
            # The event is itself signed by a checkpoint: caught there, and narrowed to the
            # events since the previous checkpoint.
            assert report.reason == "checkpoint_mismatch"
            assert report.checkpoint_seq == position
            assert report.first_bad_seq == position - EVERY + 1


def test_deleting_an_event_is_caught() -> None:
    for position in POSITIONS:
        report = verify_from(position, EVENTS[position:])
        assert not report.ok, position
        assert report.first_bad_seq == position, (position, report)
        assert report.reason == ("truncated" if position == N else "seq_mismatch")


def test_duplicating_an_event_is_caught() -> None:
    for position in POSITIONS:
        tail = [EVENTS[position - 1], copy.deepcopy(EVENTS[position - 1]), *EVENTS[position:]]
        report = verify_from(position, tail)
        assert not report.ok, position
        assert report.first_bad_seq == position + 1, (position, report)


def test_inserting_a_well_formed_event_is_caught() -> None:
    """The forged event links correctly to its predecessor and hashes correctly; the
    genuine event after it no longer fits."""
    for position in POSITIONS:
        forged = copy.deepcopy(EVENTS[position - 1])
        forged.action = Action.subject_erased.value
        forged.data = {}
        forged.hash = forged.compute_hash()
        report = verify_from(position, [forged, *EVENTS[position - 1 :]])
        assert not report.ok, position
        if position % EVERY:
            assert report.first_bad_seq == position + 1, (position, report)
        else:  # the forged event took a signed seq: the checkpoint there catches it
            assert report.reason == "checkpoint_mismatch"
            assert report.first_bad_seq == position - EVERY + 1


def test_swapping_neighbours_is_caught() -> None:
    for position in POSITIONS:
        if position == N:
            continue
        a, b = EVENTS[position - 1], EVENTS[position]
        report = verify_from(position, [b, a, *EVENTS[position + 1 :]])
        assert not report.ok, position
        assert report.first_bad_seq == position, (position, report)


def test_truncating_the_tail_is_caught_against_any_later_checkpoint() -> None:
    for keep in (0, 1, 999, 1000, 4321, 9000, 9999):
        kept = EVENTS[:keep]
        later = [c for c in CHECKPOINTS if c.seq > keep]
        # Without a checkpoint beyond the cut, a prefix is indistinguishable from a chain
        # that was shorter: this is why auditors keep checkpoints outside.
        assert verify_full(kept, [c for c in CHECKPOINTS if c.seq <= keep]).ok
        for held in later[:: max(1, len(later) // 3)]:
            report = verify_full(kept, [held])
            assert not report.ok, (keep, held.seq)
            assert report.reason == "truncated"
            assert report.first_bad_seq == keep + 1
            assert report.checkpoint_seq == held.seq


def test_rewriting_a_suffix_is_caught_against_any_later_checkpoint() -> None:
    for start in (1, 1001, 5555, 9999):
        forged = copy.deepcopy(EVENTS)
        prev = forged[start - 2].hash if start > 1 else GENESIS_HASH
        for event in forged[start - 1 :]:
            if event.seq == start:
                event.data = {}
            event.prev_hash = prev
            event.hash = event.compute_hash()
            prev = event.hash
        # Internally consistent: only a signed checkpoint can tell.
        assert verify_full(forged, []).ok
        later = [c for c in CHECKPOINTS if c.seq >= start]
        for held in {later[0].seq: later[0], later[-1].seq: later[-1]}.values():
            report = verify_full(forged, [held])
            assert not report.ok, (start, held.seq)
            assert report.reason == "checkpoint_mismatch"
            assert report.checkpoint_seq == held.seq
            assert report.first_bad_seq is not None
            assert report.first_bad_seq <= start
        # With all of them, the report narrows it to after the last checkpoint that held.
        report = verify_full(forged, CHECKPOINTS)
        assert report.first_bad_seq == (start - 1) // EVERY * EVERY + 1


def test_a_forged_or_conflicting_checkpoint_is_caught() -> None:
    real = CHECKPOINTS[3]
    forged = Checkpoint(real.seq, _flip_hex(real.hash), real.time, real.key_id, real.signature)
    report = verify_full(EVENTS, [forged])
    assert report.reason == "bad_checkpoint_signature"
    other = Signer(b"\x09" * 32).sign(real.seq, real.hash, START)
    assert verify_full(EVENTS, [other]).reason == "bad_checkpoint_signature"
    equivocation = SIGNER.sign(real.seq, _flip_hex(real.hash), START)
    report = verify_full(EVENTS, [real, equivocation])
    assert report.reason == "conflicting_checkpoints"
    assert report.first_bad_seq == real.seq


@pytest.mark.parametrize("position", [1, 2, 5000, 10000])
def test_the_snapshot_shortcut_agrees_with_a_full_walk(position: int) -> None:
    for field in ("hash", "data.value", "seq+1", "actor.id"):
        event = mutated(position, FIELD_MUTATIONS[field])
        events = [*EVENTS[: position - 1], event, *EVENTS[position:]]
        full = verify_full(events, CHECKPOINTS)
        short = verify_from(position, [event, *EVENTS[position:]])
        assert (full.first_bad_seq, full.reason) == (short.first_bad_seq, short.reason)


SMALL = EVENTS[:300]
SMALL_CHECKPOINTS = [c for c in CHECKPOINTS if c.seq <= 300]


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(["field", "delete", "duplicate", "swap"]),
    field=st.sampled_from(sorted(FIELD_MUTATIONS)),
    position=st.integers(min_value=1, max_value=299),
)
def test_any_single_mutation_is_caught_from_scratch(kind: str, field: str, position: int) -> None:
    """Property: on a 300-event prefix, verified from scratch with no shortcut."""
    events = list(SMALL)
    if kind == "field":
        events[position - 1] = mutated(position, FIELD_MUTATIONS[field])
        expected = position
    elif kind == "delete":
        del events[position - 1]
        expected = position
    elif kind == "duplicate":
        events.insert(position, copy.deepcopy(events[position - 1]))
        expected = position + 1
    else:
        events[position - 1], events[position] = events[position], events[position - 1]
        expected = position
    report = verify_full(events, SMALL_CHECKPOINTS)
    assert not report.ok
    assert report.first_bad_seq == expected, report
