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

import base64
import copy
import json
import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import zstandard
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from typer.testing import CliRunner

from app import audit
from app.audit import Action, store, verification
from app.audit.chain import GENESIS_HASH, Checkpoint, EventRecord, Signer, format_time
from app.audit.cli import audit_cli
from app.audit.export import ChainBroken, chunks, prepare_export
from app.audit.reader import ExportFile, read_export, verify_export
from app.audit.verify import ChainVerifier, VerifyReport
from app.audit.writer import actor_of
from app.compact import RAW, pack
from app.models.audit import AuditEvent
from app.settings import Settings
from tests.audit.conftest import CLINIC, add_events, record_disclosures, sample_event, tamper

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


def signed_header(from_seq: int, to_seq: int, log_size: int) -> dict[str, object]:
    header: dict[str, object] = {
        "type": "header",
        "format": "ruta-audit-export",
        "version": 2,
        "from_seq": from_seq,
        "to_seq": to_seq,
        "log_size": log_size,
    }
    header["header_signature"] = SIGNER.sign_document(header)
    return header


def verify_full(
    events: list[EventRecord],
    checkpoints: list[Checkpoint],
    *,
    genuine: list[EventRecord] = EVENTS,
    held: list[Checkpoint] | None = None,
    with_final: bool = True,
) -> VerifyReport:
    """An export of ``genuine`` as the service signed it (header and last checkpoint), whose
    events were then replaced by ``events``: what an auditor holds after tampering."""
    export = ExportFile(
        header=signed_header(1, len(genuine), len(genuine)),
        events=events,
        checkpoints=checkpoints,
        final=SIGNER.sign(len(genuine), genuine[-1].hash, START) if with_final else None,
    )
    return verify_export(export, SIGNER.public_key, held or [])


def service_export(
    events: list[EventRecord], checkpoints: list[Checkpoint], held: list[Checkpoint]
) -> VerifyReport:
    """An export the service signed of whatever its database holds (say, after its owner
    truncated or rewrote it), verified against checkpoints an auditor or witness kept."""
    export = ExportFile(
        header=signed_header(1, len(events), len(events)),
        events=events,
        checkpoints=checkpoints,
        final=SIGNER.sign(len(events), events[-1].hash, START) if events else None,
    )
    return verify_export(export, SIGNER.public_key, held)


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
    assert report.checkpoints_checked == N // EVERY + 1  # and the export's own


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
    for keep in (1, 999, 1000, 4321, 9000, 9999):
        kept = EVENTS[:keep]
        later = [c for c in CHECKPOINTS if c.seq > keep]
        # Without a checkpoint beyond the cut, a prefix is indistinguishable from a chain
        # that was shorter: this is why auditors and witnesses keep checkpoints outside.
        assert service_export(kept, [c for c in CHECKPOINTS if c.seq <= keep], []).ok
        for held in later[:: max(1, len(later) // 3)]:
            report = service_export(kept, [], [held])
            assert not report.ok, (keep, held.seq)
            assert report.reason == "truncated"
            assert report.first_bad_seq == keep + 1
            assert (report.checkpoint_seq, report.checkpoint_source) == (held.seq, "held")


def test_an_export_of_an_emptied_log_proves_nothing() -> None:
    report = service_export([], [], [])
    assert (report.ok, report.reason) == (False, "empty_export")


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
        # Edited in the auditor's copy of an export: the checkpoint the service signed over
        # the export's last event tells, even with every other checkpoint line removed.
        report = verify_full(forged, [])
        assert (report.ok, report.reason, report.checkpoint_source) == (
            False,
            "checkpoint_mismatch",
            "export",
        )
        # ... and with that one removed too, the export proves nothing and is refused.
        report = verify_full(forged, [], with_final=False)
        assert (report.ok, report.reason) == (False, "missing_export_checkpoint")
        # Rewritten in the database by its owner, the service's own export of it is
        # internally consistent: only a checkpoint signed before the rewrite can tell.
        assert service_export(forged, [], []).ok
        later = [c for c in CHECKPOINTS if c.seq >= start]
        for held in {later[0].seq: later[0], later[-1].seq: later[-1]}.values():
            report = service_export(forged, [], [held])
            assert not report.ok, (start, held.seq)
            assert report.checkpoint_seq == held.seq
            if held.seq == N:
                # The service signed another head for the very seq a witness holds.
                assert report.reason == "conflicting_checkpoints"
                continue
            assert (report.reason, report.checkpoint_source) == ("checkpoint_mismatch", "held")
            assert report.first_bad_seq is not None
            assert report.first_bad_seq <= start
        # With all of them, the report narrows it to after the last checkpoint that held.
        report = service_export(forged, [], CHECKPOINTS[:-1])
        if start <= CHECKPOINTS[-2].seq:
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
    report = verify_full(events, SMALL_CHECKPOINTS, genuine=SMALL)
    assert not report.ok
    assert report.first_bad_seq == expected, report


# -- the stored form (database) -------------------------------------------------------------
#
# The hash is computed over canonical text (a lowercase UUID), but auditors' queries compare
# what is stored. On SQLite a UUID is text: stored in upper case it would still hash the same
# and no longer be found, hiding a case's disclosures while every check said intact.

CASE = uuid.UUID("5b0f7a2e-8c1d-4e0a-9b3f-2d6c1a7e9f10")


async def _disclosures(maker: async_sessionmaker[AsyncSession]) -> list[int]:
    async with maker() as session:
        found = await store.list_events(
            session,
            store.EventFilter(screening_id=CASE, action=Action.personal_data_read.value),
            after_seq=0,
            limit=100,
        )
    return [e.seq for e in found]


async def _case_with_three_disclosures(maker: async_sessionmaker[AsyncSession]) -> list[int]:
    await add_events(maker, 5)
    await record_disclosures(maker, CASE, 3)
    await add_events(maker, 2)
    seqs = await _disclosures(maker)
    assert len(seqs) == 3
    return seqs


async def test_insert_or_replace_cannot_rewrite_an_event(
    audited: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    """With every trigger in place, replacing an event (SQLite's INSERT OR REPLACE does not
    fire DELETE triggers; PostgreSQL's ON CONFLICT DO UPDATE is an UPDATE) is refused."""
    seqs = await _case_with_three_disclosures(audited)
    columns = (
        "seq, prev_hash, hash, occurred_at, action, actor_type, actor_id, actor_role, "
        "{screening}, referral_id, partner_id, subject_id, request_id, data"
    )
    if settings.is_sqlite:
        statement = (
            f"INSERT OR REPLACE INTO audit_events ({columns.format(screening='screening_id')}) "  # noqa: S608
            f"SELECT {columns.format(screening='upper(screening_id)')} "
            "FROM audit_events WHERE seq = :seq"
        )
    else:
        statement = (
            f"INSERT INTO audit_events ({columns.format(screening='screening_id')}) "  # noqa: S608
            f"SELECT {columns.format(screening='screening_id')} FROM audit_events "
            "WHERE seq = :seq ON CONFLICT (seq) DO UPDATE SET screening_id = gen_random_uuid()"
        )
    for seq in seqs:
        async with audited() as session:
            with pytest.raises(DBAPIError, match="append-only"):
                await session.execute(text(statement), {"seq": seq})
            await session.rollback()
    assert await _disclosures(audited) == seqs
    async with audited() as session:
        assert (await store.verify_database(session, settings)).ok


#: Non-canonical stored forms of a UUID on SQLite: upper case, and the hyphenated text (the
#: very text that is hashed, so only the reader's strictness can catch it).
REWRITES = {
    "upper case": "upper(screening_id)",
    "hyphenated": (
        "substr(screening_id, 1, 8) || '-' || substr(screening_id, 9, 4) || '-' || "
        "substr(screening_id, 13, 4) || '-' || substr(screening_id, 17, 4) || '-' || "
        "substr(screening_id, 21)"
    ),
}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # uuid has one form on PG
@pytest.mark.parametrize("form", REWRITES)
async def test_a_uuid_rewritten_in_another_form_is_refused_or_caught(
    audited: async_sessionmaker[AsyncSession], settings: Settings, form: str
) -> None:
    """SQLite: the schema refuses a non-canonical UUID; and if its owner switches the
    checks off too, the verifier reads the stored text, accepts only the stored form (32
    lowercase hex digits), and the event no longer hashes."""
    seqs = await _case_with_three_disclosures(audited)
    rewrite = f"UPDATE audit_events SET screening_id = {REWRITES[form]} WHERE seq = :seq"  # noqa: S608
    async with audited() as session:
        await session.execute(text("DROP TRIGGER audit_events_no_update"))
        with pytest.raises(IntegrityError, match="screening_id_canonical"):
            await session.execute(text(rewrite), {"seq": seqs[0]})
        await session.rollback()
    async with audited() as session:
        await session.execute(text("DROP TRIGGER audit_events_no_update"))
        await session.execute(text("PRAGMA ignore_check_constraints = ON"))
        for seq in seqs:
            await session.execute(text(rewrite), {"seq": seq})
        await session.commit()
    assert await _disclosures(audited) == []  # hidden from auditors' queries ...
    async with audited() as session:
        report = await store.verify_database(session, settings)
    assert (report.ok, report.first_bad_seq, report.reason) == (False, seqs[0], "hash_mismatch")


# -- stored data that no longer reads (migration 0014) --------------------------------------


def _damaged(stored: bytes) -> dict[str, bytes]:
    """The ways the owner of the database can leave an event's data bytes unreadable."""
    return {
        "truncated": stored[:-3],
        "a byte appended": stored + b"\x00",
        "an unknown codec": b"\x07" + stored[1:],
        "not a frame": b"\x02" + b'{"rules_fired":[]}',
        "a frame of no stated size": b"\x02"
        + zstandard.ZstdCompressor(write_content_size=False).compress(b"{}"),
        "not JSON": pack(b'{"rules_fired": [', RAW),
        "empty": b"",
    }


@pytest.mark.parametrize("damage", list(_damaged(b"\x02" + b"x" * 8)))
async def test_stored_data_that_does_not_read_fails_at_its_event(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, damage: str
) -> None:
    """Tampered, truncated or of an unknown codec: the walk reports the event as failing
    (``data_unreadable``, saying why) and never passes it; the export stops before it and
    signs nothing; readers show it as unreadable rather than fail."""
    settings = settings.model_copy(update={"audit_checkpoint_every": 10})
    audit.configure_sessionmaker(sessionmaker, settings)
    await add_events(sessionmaker, 30, per_transaction=5)
    async with sessionmaker() as session:
        stored = (
            await session.execute(text("SELECT data FROM audit_events WHERE seq = 17"))
        ).scalar_one()
    await tamper(
        sessionmaker,
        settings,
        "UPDATE audit_events SET data = :d WHERE seq = 17",
        params={"d": _damaged(bytes(stored))[damage]},
    )
    async with sessionmaker() as session:
        report = await store.verify_database(session, settings)
        page = await store.list_events(session, store.EventFilter(), after_seq=16, limit=2)
        orm = (await session.execute(select(AuditEvent).where(AuditEvent.seq == 17))).scalar_one()
    assert (report.ok, report.first_bad_seq, report.reason) == (False, 17, "data_unreadable")
    assert report.detail is not None
    assert report.detail.startswith("its stored data: ")
    assert report.events_checked == 16
    assert [r.seq for r in page] == [17, 18]
    assert set(page[0].data) == {"unreadable"} == set(orm.data)
    assert page[0].data["unreadable"] == report.detail.removeprefix("its stored data: ")
    walked = await verification.walk_if_due(sessionmaker, settings, "walker")
    assert walked is not None
    assert (walked.ok, walked.first_bad_seq, walked.reason) == (False, 17, "data_unreadable")
    export = await _service_export(sessionmaker, settings)
    assert export.final is None
    assert export.error is not None
    assert (export.error["reason"], export.error["first_bad_seq"]) == ("data_unreadable", 17)
    assert [e.seq for e in export.events] == list(range(1, 17))


# -- the offline checker refuses what it cannot prove (files) -------------------------------

FULL = EVENTS[:595]


def _export_lines(events: list[EventRecord], *, to_seq: int = 595) -> list[bytes]:
    """An export of seq 1..to_seq as the service writes it, carrying ``events``."""
    lines = [orjson.dumps(signed_header(1, to_seq, to_seq))]
    lines += [orjson.dumps(e.to_json()) for e in events]
    final = SIGNER.sign(to_seq, EVENTS[to_seq - 1].hash, START)
    lines.append(orjson.dumps({**final.to_json(), "export": True}))
    return lines


def _write(tmp_path: Path, content: bytes | list[bytes], name: str = "audit.ndjson") -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else b"\n".join(content) + b"\n")
    return path


def _check(path: Path, *extra: str) -> tuple[int, str, str]:
    key = base64.b64encode(SIGNER.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw))
    result = CliRunner().invoke(
        audit_cli, ["verify", str(path), "--public-key", key.decode(), *extra]
    )
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def test_the_checker_passes_a_whole_export(tmp_path: Path) -> None:
    code, out, err = _check(_write(tmp_path, _export_lines(FULL)))
    assert code == 0, err
    assert json.loads(out)["last_seq"] == 595
    assert err.startswith("INTACT")


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"", "empty"),
        (b"\n\n  \n", "empty"),
        (
            b'{"type":"/problems/unauthorized","title":"Authentication required","status":401}',
            "error response (HTTP 401",
        ),
        (b'{"type":"event","seq":1}\n', "does not start with a Ruta audit export header"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\xff", "not a Ruta audit export"),
        (b"{\x00\xff\xfe garbage", "not JSON"),
        (b"record,seq,hash\nheader,1,x\n", "no column"),
        (b"seq,prev_hash\n1,00\n", "not a Ruta audit export"),
    ],
)
def test_the_checker_refuses_files_that_are_not_exports(
    tmp_path: Path, content: bytes, says: str
) -> None:
    code, _out, err = _check(_write(tmp_path, content))
    assert code == 2, err
    assert says in err


def test_the_checker_refuses_a_missing_file_and_a_bad_key(tmp_path: Path) -> None:
    code, _out, err = _check(tmp_path / "nowhere.ndjson")
    assert (code, "cannot read" in err) == (2, True)
    path = _write(tmp_path, _export_lines(FULL))
    result = CliRunner().invoke(audit_cli, ["verify", str(path), "--public-key", "not-a-key"])
    assert result.exit_code == 2
    kept = _write(tmp_path, [b"not json"], "kept.ndjson")
    code, _out, err = _check(path, "--checkpoints", str(kept))
    assert code == 2
    assert "kept.ndjson" in err


def test_a_header_alone_is_an_export_cut_short(tmp_path: Path) -> None:
    lines = _export_lines(FULL)
    code, out, err = _check(_write(tmp_path, lines[:1]))
    assert code == 1
    assert json.loads(out)["reason"] == "truncated"
    assert "cut short" in err


def test_an_export_cut_short_is_held_to_its_signed_range(tmp_path: Path) -> None:
    """300 of 595 events: the signed header says 595, so the file is not intact, with or
    without the export's own checkpoint line at its end."""
    for lines in (_export_lines(FULL)[:301], _export_lines(FULL[:300])):
        code, out, _err = _check(_write(tmp_path, lines))
        report = json.loads(out)
        assert code == 1
        assert (report["reason"], report["first_bad_seq"]) == ("truncated", 301)


def test_an_edited_rehashed_export_without_its_checkpoints_is_refused(tmp_path: Path) -> None:
    forged = copy.deepcopy(FULL)
    forged[99].data = {}
    prev = forged[98].hash
    for event in forged[99:]:
        event.prev_hash = prev
        event.hash = event.compute_hash()
        prev = event.hash
    lines = _export_lines(forged)
    code, out, _err = _check(_write(tmp_path, lines[:-1]))  # its checkpoint lines removed
    assert code == 1
    assert json.loads(out)["reason"] == "missing_export_checkpoint"
    code, out, _err = _check(_write(tmp_path, lines))  # or kept: it no longer matches
    assert code == 1
    assert json.loads(out)["reason"] == "checkpoint_mismatch"


def test_a_damaged_line_or_csv_row_is_not_intact_at_its_place(tmp_path: Path) -> None:
    lines = _export_lines(FULL)
    lines[41] = b'{"action": broken'
    code, out, _err = _check(_write(tmp_path, lines))
    assert code == 1
    assert json.loads(out)["first_bad_seq"] == 41


def test_verify_help_states_the_exit_codes() -> None:
    result = CliRunner().invoke(audit_cli, ["verify", "--help"], terminal_width=200)
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    for phrase in ("0 intact", "1 not intact", "2 unreadable or not an export"):
        assert phrase in text, phrase


# -- the service signs nothing for a chain that fails against its own checkpoints -----------


async def _service_export(
    maker: async_sessionmaker[AsyncSession], settings: Settings, **bounds: int
) -> ExportFile:
    async with maker() as session:
        plan = await prepare_export(session, settings, actor=CLINIC, fmt="ndjson", **bounds)  # type: ignore[arg-type]
        await session.commit()
        body = b"".join([chunk async for chunk in chunks(session, plan, "ndjson")])
    return read_export(body.splitlines())


async def _drop_tail(
    maker: async_sessionmaker[AsyncSession], settings: Settings, keep: int
) -> None:
    await tamper(maker, settings, "DELETE FROM audit_events WHERE seq > :k", params={"k": keep})


async def test_a_truncated_chain_gets_no_signed_export(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    """Rows above a stored checkpoint deleted: every export is refused, with the reason."""
    settings = settings.model_copy(update={"audit_checkpoint_every": 10})
    audit.configure_sessionmaker(sessionmaker, settings)
    await add_events(sessionmaker, 30, per_transaction=5)
    await _drop_tail(sessionmaker, settings, 25)
    for bounds in ({}, {"from_seq": 1, "to_seq": 5}):
        with pytest.raises(ChainBroken) as refused:
            await _service_export(sessionmaker, settings, **bounds)
        problem = refused.value.problem()
        assert problem["status"] == 409
        assert (problem["reason"], problem["first_bad_seq"], problem["checkpoint_seq"]) == (
            "truncated",
            26,
            30,
        )


async def test_an_export_carries_the_latest_checkpoint_even_beyond_its_range(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, tmp_path: Path
) -> None:
    """With a consistency proof from the export's last event to it, so the verifier checks
    that the log signed later extends the exported events."""
    settings = settings.model_copy(update={"audit_checkpoint_every": 10})
    audit.configure_sessionmaker(sessionmaker, settings)
    await add_events(sessionmaker, 30, per_transaction=5)
    export = await _service_export(sessionmaker, settings, from_seq=1, to_seq=5)
    assert [c.seq for c in export.checkpoints] == [30]
    assert list(export.consistency) == [30]
    key = audit.AuditConfig.from_settings(settings).signer.public_key
    report = verify_export(export, key)
    assert report.ok, report
    assert report.unchecked_checkpoints == []
    export.consistency[30] = export.consistency[30][1:]
    report = verify_export(export, key)
    assert (report.ok, report.reason, report.checkpoint_seq) == (False, "checkpoint_mismatch", 30)


async def test_a_kept_checkpoint_beyond_the_log_is_truncation_not_range(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    """The clear verdicts: a checkpoint an auditor kept is *beyond the range* when the log
    still holds its events, *truncated* when the log no longer does."""
    settings = settings.model_copy(update={"audit_checkpoint_every": 10})
    audit.configure_sessionmaker(sessionmaker, settings)
    await add_events(sessionmaker, 30, per_transaction=5)
    async with sessionmaker() as session:
        kept = await store.checkpoints(session)
    key = audit.AuditConfig.from_settings(settings).signer.public_key
    partial = await _service_export(sessionmaker, settings, from_seq=1, to_seq=12)
    report = verify_export(partial, key, kept)
    assert report.ok, report
    # 10 is in the range; 30 is the export's latest, checked by its consistency proof; 20
    # is neither, and the report says so, and what to do.
    assert report.unchecked_checkpoints == [20]
    assert report.advice == [
        "the checkpoint at seq 20 is beyond this export's range (it ends at seq 12); "
        "export up to seq 20 to check it"
    ]
    # The owner cuts the tail and the stored checkpoints above it; the service's export
    # of what is left is signed and consistent, but the kept checkpoint says otherwise.
    await tamper(
        sessionmaker,
        settings,
        "DELETE FROM audit_events WHERE seq > 25",
        "DELETE FROM audit_checkpoints WHERE seq > 25",
        tables=("audit_events", "audit_checkpoints"),
    )
    whole = await _service_export(sessionmaker, settings)
    assert verify_export(whole, key).ok
    report = verify_export(whole, key, kept)
    assert (report.ok, report.reason, report.checkpoint_seq, report.checkpoint_source) == (
        False,
        "truncated",
        30,
        "held",
    )
