"""Online verification in bounded time (from the frontier), and the background full walk:
leased, reporting progress, recording its result, and catching what the increment cannot."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import audit
from app.audit import store, verification
from app.models import AuditEvent, AuditVerificationState
from app.models.base import utcnow
from app.settings import Settings
from tests.audit.conftest import CLINIC, STORED_EMPTY, add_events
from tests.audit.conftest import tamper as _tamper


async def _verify(maker: async_sessionmaker[AsyncSession], settings: Settings) -> dict:  # type: ignore[type-arg]
    async with maker() as session:
        out = await verification.verify_online(session, settings, CLINIC)
        await session.commit()
    return out


async def test_each_verification_starts_where_the_last_one_ended(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    settings = settings.model_copy(update={"audit_checkpoint_every": 500})
    audit.configure_sessionmaker(sessionmaker, settings)
    await add_events(sessionmaker, 2000)
    first = await _verify(sessionmaker, settings)
    assert first["ok"], first
    assert (first["from_seq"], first["verified_through"], first["complete"]) == (1, 2000, True)
    assert first["full_walk"]["status"] == "requested"  # never walked yet
    await add_events(sessionmaker, 100)
    # The verification itself was recorded (seq 2001), then 100 more events.
    second = await _verify(sessionmaker, settings)
    assert second["ok"], second
    assert (second["from_seq"], second["verified_through"]) == (2001, 2101)
    assert second["events_checked"] == 101


async def test_a_large_backlog_is_cut_short_and_left_to_the_walk(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    audit.configure_sessionmaker(sessionmaker, settings)
    await add_events(sessionmaker, 3000)
    async with sessionmaker() as session:
        step = await verification.advance(session, settings, budget=0)
        await session.commit()
    assert step.report.ok, step.report
    assert (step.verified_through, step.complete) == (1000, False)
    report = await verification.walk_if_due(sessionmaker, settings, "test-walker")
    assert report is not None
    assert report.ok, report
    async with sessionmaker() as session:
        state = await session.get(AuditVerificationState, 1)
        assert state is not None
        assert (state.last_walk_ok, state.last_walk_to_seq, state.frontier_seq) == (
            True,
            3000,
            3000,
        )
        recorded = (
            await session.execute(
                select(AuditEvent.data).where(AuditEvent.action == "audit.verified")
            )
        ).scalar_one()
    assert recorded["scope"] == "full"
    assert (recorded["ok"], recorded["to_seq"], recorded["count"]) == (True, 3000, 3000)
    # Not due again until RUTA_AUDIT_FULL_VERIFY_HOURS have passed.
    assert await verification.walk_if_due(sessionmaker, settings, "test-walker") is None


async def test_the_walk_is_leased_to_one_process_and_reports_progress(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    audit.configure_sessionmaker(sessionmaker, settings)
    await add_events(sessionmaker, 50)
    now = utcnow()
    assert await verification._claim(sessionmaker, settings, "walker-a", now) == 50
    assert await verification._claim(sessionmaker, settings, "walker-b", now) is None
    assert await verification._progress(sessionmaker, "walker-a", 20, now)
    assert not await verification._progress(sessionmaker, "walker-b", 30, now)
    async with sessionmaker() as session:
        state = await session.get(AuditVerificationState, 1)
        assert state is not None
        walk = verification.walk_status(state, now)
    assert (walk["status"], walk["progress_seq"], walk["to_seq"]) == ("running", 20, 50)
    # A dead walker's lease runs out, and the walk is taken again.
    later = now + verification.WALK_LEASE + timedelta(seconds=1)
    async with sessionmaker() as session:
        await session.execute(text("UPDATE audit_verification_state SET walk_requested = true"))
        await session.commit()
    assert await verification._claim(sessionmaker, settings, "walker-b", later) == 50


async def test_what_the_increment_cannot_see_the_walk_reports(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    """An event rewritten below the frontier (hash recomputed) is the walk's to find; from
    then on every verification says the chain is broken."""
    audit.configure_sessionmaker(sessionmaker, settings)
    await add_events(sessionmaker, 40)
    assert (await _verify(sessionmaker, settings))["ok"]
    await _tamper(
        sessionmaker,
        settings,
        "UPDATE audit_events SET data = :d WHERE seq = 7",
        params={"d": STORED_EMPTY},
    )
    assert (await _verify(sessionmaker, settings))["ok"]  # the increment is past it
    report = await verification.walk_if_due(sessionmaker, settings, "walker")
    assert report is not None
    assert (report.ok, report.first_bad_seq, report.reason) == (False, 7, "hash_mismatch")
    after = await _verify(sessionmaker, settings)
    assert (after["ok"], after["first_bad_seq"], after["reason"]) == (False, 7, "hash_mismatch")
    assert after["full_walk"]["status"] == "failed"


async def test_a_cut_tail_is_reported_at_once(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    settings = settings.model_copy(update={"audit_checkpoint_every": 10})
    audit.configure_sessionmaker(sessionmaker, settings)
    await add_events(sessionmaker, 35)
    assert (await _verify(sessionmaker, settings))["ok"]
    await _tamper(sessionmaker, settings, "DELETE FROM audit_events WHERE seq > 32")
    out = await _verify(sessionmaker, settings)
    assert (out["ok"], out["reason"], out["first_bad_seq"]) == (False, "truncated", 33)


async def test_the_walk_reports_progress_while_it_reads(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Progress is written from another transaction in the middle of the walk's reading: on
    SQLite that once waited for the walk's own write lock."""
    audit.configure_sessionmaker(sessionmaker, settings)
    await add_events(sessionmaker, 300)
    monkeypatch.setattr(verification, "PROGRESS_SECONDS", 0.0)
    seen: list[int] = []
    original = verification._progress

    async def spy(*args: object) -> bool:
        seen.append(int(args[2]))  # type: ignore[call-overload]
        return await original(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(verification, "_progress", spy)
    report = await verification.walk_if_due(sessionmaker, settings, "walker")
    assert report is not None
    assert report.ok, report
    assert seen == list(range(1, 301))


async def test_a_checkpoint_made_while_the_walk_runs_is_not_a_cut_log(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Intake goes on while the walk runs: events and a checkpoint beyond the head the walk
    claimed must not read as a truncated log (the storage benchmark once raised that alarm),
    while a log that really lost its end still is reported."""
    audit.configure_sessionmaker(sessionmaker, settings)
    await add_events(sessionmaker, 30)
    original = verification._claim

    async def claim_then_write(*args: object) -> int | None:
        target = await original(*args)  # type: ignore[arg-type]
        await add_events(sessionmaker, 5)
        async with sessionmaker() as session:
            await audit.checkpoint_if_due(session, settings, force=True)
            await session.commit()
        return target

    monkeypatch.setattr(verification, "_claim", claim_then_write)
    report = await verification.walk_if_due(sessionmaker, settings, "walker")
    assert report is not None
    assert report.ok, report
    assert report.last_seq == 30

    await _tamper(sessionmaker, settings, "DELETE FROM audit_events WHERE seq > 33")
    async with sessionmaker() as session:
        state = await session.get(AuditVerificationState, 1)
        assert state is not None
        state.walk_requested = True
        await session.commit()
    monkeypatch.setattr(verification, "_claim", original)
    cut = await verification.walk_if_due(sessionmaker, settings, "walker")
    assert cut is not None
    assert (cut.ok, cut.reason) == (False, "truncated"), cut


async def test_a_checkpoint_made_between_the_reads_of_one_increment_is_not_a_cut_log(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if settings.is_sqlite:
        pytest.skip("SQLite serialises writers: nothing is written between an increment's reads")
    audit.configure_sessionmaker(sessionmaker, settings)
    await add_events(sessionmaker, 20)
    original = store.head
    made = False

    async def then_more(session: AsyncSession) -> tuple[int, str | None]:
        nonlocal made
        found = await original(session)
        if not made:
            made = True
            await add_events(sessionmaker, 3)
            async with sessionmaker() as other:
                await audit.checkpoint_if_due(other, settings, force=True)
                await other.commit()
        return found

    monkeypatch.setattr(store, "head", then_more)
    out = await _verify(sessionmaker, settings)
    assert out["ok"], out
    assert made
