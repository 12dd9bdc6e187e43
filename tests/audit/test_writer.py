"""The writer: events commit with their action, in one gapless chain, or not at all."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import audit
from app.audit import Action, AuditDataRejected, AuditNotConfigured
from app.audit.store import checkpoints, verify_database
from app.models import AuditEvent, Subject
from app.settings import Settings
from tests.audit.conftest import CLINIC, add_events


async def _seqs(maker: async_sessionmaker[AsyncSession]) -> list[int]:
    async with maker() as session:
        return list(
            (await session.execute(select(AuditEvent.seq).order_by(AuditEvent.seq))).scalars()
        )


async def test_events_commit_with_the_transaction(
    audited: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    await add_events(audited, 7, per_transaction=3)
    assert await _seqs(audited) == list(range(1, 8))
    async with audited() as session:
        report = await verify_database(session, settings)
    assert report.ok, report
    assert report.last_seq == 7


async def test_rolled_back_action_leaves_no_event(
    audited: async_sessionmaker[AsyncSession],
) -> None:
    subject_id = uuid.uuid4()
    async with audited() as session:
        session.add(Subject(id=subject_id, organisation="org", case_code="C-1"))
        await audit.record(
            session, action=Action.subject_erased, actor=CLINIC, subject_id=subject_id
        )
        await session.flush()
        await session.rollback()
    # A flushed-early event is rolled back with its action too.
    async with audited() as session:
        await audit.record(session, action=Action.subject_erased, actor=CLINIC)
        await audit.flush_pending(session)
        await session.rollback()
    async with audited() as session:
        await audit.record(session, action=Action.subject_erased, actor=CLINIC)
        # closed without commit
    assert await _seqs(audited) == []
    async with audited() as session:
        assert await session.get(Subject, subject_id) is None


async def test_savepoint_rollback_discards_only_its_events(
    audited: async_sessionmaker[AsyncSession],
) -> None:
    async with audited() as session:
        await audit.record(session, action=Action.screening_received, actor=CLINIC)
        nested = await session.begin_nested()
        await audit.record(session, action=Action.subject_erased, actor=CLINIC)
        await nested.rollback()
        async with session.begin_nested():
            await audit.record(session, action=Action.referral_created, actor=CLINIC)
        await session.commit()
    async with audited() as session:
        actions = list(
            (await session.execute(select(AuditEvent.action).order_by(AuditEvent.seq))).scalars()
        )
    assert actions == ["screening.received", "referral.created"]


async def test_checkpoint_every_n_events(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    audit.configure_sessionmaker(
        sessionmaker, settings.model_copy(update={"audit_checkpoint_every": 10})
    )
    await add_events(sessionmaker, 25, per_transaction=4)
    async with sessionmaker() as session:
        seqs = [c.seq for c in await checkpoints(session)]
    # Transactions end at 4, 8, 12, 16, 20, 24, 25: the first append at or past each 10.
    assert seqs == [12, 20]


async def test_time_based_checkpoint(
    audited: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    async with audited() as session:
        assert await audit.checkpoint_if_due(session, settings) is None  # empty chain
    await add_events(audited, 3)
    async with audited() as session:
        first = await audit.checkpoint_if_due(session, settings)
        await session.commit()
    assert first is not None
    assert first.seq == 3
    async with audited() as session:
        # Not due: the head did not move.
        assert await audit.checkpoint_if_due(session, settings, force=True) is None
    await add_events(audited, 2)
    async with audited() as session:
        assert await audit.checkpoint_if_due(session, settings) is None  # not yet T minutes
        forced = await audit.checkpoint_if_due(session, settings, force=True)
        await session.commit()
    assert forced is not None
    assert forced.seq == 5


async def test_unconfigured_session_fails_loudly(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    async with sessionmaker() as session:
        with pytest.raises(AuditNotConfigured):
            await audit.record(session, action=Action.subject_erased, actor=CLINIC)


@pytest.mark.parametrize(
    ("action", "data"),
    [
        (Action.screening_received, {"name": "CANARY-NAME-4411"}),
        (Action.screening_received, {"notes": "she said"}),
        (Action.personal_data_read, {"purpose": "called her at home"}),
        (Action.personal_data_read, {"purpose": "maria@example.org"}),
        (Action.personal_data_read, {"purpose": "+51987654321"}),
        (Action.personal_data_read, {"purpose": "DNI-45678912"}),
        (Action.personal_data_read, {"fields": ["subject.name", "x" * 80]}),
        (Action.referral_attempted, {"attempt": "3"}),
        (Action.referral_attempted, {"attempt": 1.5}),
        (Action.decision_made, {"rule_set_hash": "not-a-hash"}),
        (Action.decision_made, {"rules_fired": "minor"}),
    ],
)
async def test_personal_or_free_text_data_is_refused(
    audited: async_sessionmaker[AsyncSession], action: Action, data: dict[str, object]
) -> None:
    async with audited() as session:
        with pytest.raises(AuditDataRejected) as info:
            await audit.record(session, action=action, actor=CLINIC, data=data)
        # The error names the key, never the value.
        for value in data.values():
            assert str(value) not in str(info.value) or len(str(value)) < 4
        await session.commit()
    assert await _seqs(audited) == []


async def test_count(audited: async_sessionmaker[AsyncSession]) -> None:
    await add_events(audited, 1200, per_transaction=600)
    async with audited() as session:
        assert (
            await session.execute(select(func.count()).select_from(AuditEvent))
        ).scalar() == 1200


async def test_a_moved_head_is_signed_within_a_minute_by_default(
    audited: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    """The background task looks every 30 s (half of RUTA_AUDIT_CHECKPOINT_SECONDS) and
    signs once the last checkpoint is 30 s old: no event waits more than 60 s."""
    from datetime import timedelta

    from app.audit.writer import _checkpoint_if_due
    from app.models.base import utcnow
    from tests.audit.conftest import add_events

    assert Settings.model_fields["audit_checkpoint_seconds"].default == 60
    await add_events(audited, 3)
    start = utcnow()

    async def due(after: float) -> int | None:
        async with audited() as session:
            made = await session.run_sync(
                lambda s: _checkpoint_if_due(s, start + timedelta(seconds=after), False)
            )
            await session.commit()
        return None if made is None else made.seq

    assert await due(0) == 3
    await add_events(audited, 2)
    assert await due(29) is None
    assert await due(31) == 5
