"""Group commit: concurrent screenings share transactions, and each keeps its guarantees.

What a clinic relies on: 201 means stored with everything it caused, a failing screening
fails alone, a repeated id is answered as a replay or a conflict, and the audit chain stays
whole. The concurrency is real (requests in flight together through the ASGI app), and the
failure is a real database error raised by a trigger.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.store import verify_database
from app.audit.writer import CHAIN_LOCK_KEY
from app.auth import Principal, authenticate_key
from app.main import create_app
from app.metrics import (
    DECISIONS,
    INTAKE_GROUP_RETRIES,
    INTAKE_GROUP_SECONDS,
    INTAKE_GROUP_SIZE,
    RULES_FIRED,
)
from app.models import Decision, Delivery, Referral, Screening, Subject
from app.models.audit import AuditEvent
from app.models.base import utcnow
from app.partners.service import directory_partners
from app.schemas.screening import ScreeningIn
from app.services import intake
from app.services.grouping import GroupCommitter
from app.services.intake import Plan
from app.settings import Settings
from tests.conftest import (
    INTAKE_TABLES,
    KeyFactory,
    bearer,
    counter_total,
    key_factory,
    refuse_inserts,
)
from tests.delivery.conftest import partner_document
from tests.factories import adult_consenting

ORGANISATION = "Caravana de la Vida"


def _group_metrics() -> tuple[float, float, float]:
    """(groups, screenings in groups, groups retried one by one) so far in this process."""
    count = sum_ = 0.0
    for metric in INTAKE_GROUP_SIZE.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count"):
                count = sample.value
            elif sample.name.endswith("_sum"):
                sum_ = sample.value
    retries = next(
        s.value
        for m in INTAKE_GROUP_RETRIES.collect()
        for s in m.samples
        if s.name.endswith("_total")
    )
    return count, sum_, retries


def _timed_groups() -> float:
    """Groups whose write and commit were timed (the successful ones)."""
    return next(
        s.value
        for m in INTAKE_GROUP_SECONDS.collect()
        for s in m.samples
        if s.name.endswith("_count")
    )


async def _with_partner(http: httpx.AsyncClient, api_key: KeyFactory) -> str:
    """A partner offering every service, so each screening also queues its deliveries."""
    admin = await api_key("admin")
    document = partner_document("grouped-partner", "http://127.0.0.1:9/referrals")
    response = await http.post("/v1/partners", json=document, headers=bearer(admin))
    assert response.status_code == 201, response.text
    return await api_key("clinic", ORGANISATION)


async def _post_all(
    http: httpx.AsyncClient, key: str, bodies: list[dict[str, Any]]
) -> list[httpx.Response]:
    return list(
        await asyncio.gather(
            *(http.post("/v1/screenings", json=body, headers=bearer(key)) for body in bodies)
        )
    )


async def _principal(app: FastAPI, settings: Settings, key: str) -> Principal:
    async with app.state.sessionmaker() as session:
        return await authenticate_key(
            session,
            secret_key=settings.secret_key.get_secret_value().encode(),
            key=key,
            method="POST",
            route="/v1/screenings",
            request_id=None,
            cache_seconds=0,
        )


def _plan(
    app: FastAPI,
    settings: Settings,
    principal: Principal,
    body: dict[str, Any],
    *,
    partners: Any = (),
    request_id: str | None = None,
) -> Plan:
    return intake.prepare(
        settings,
        principal,
        ScreeningIn.model_validate(body),
        rule_set=app.state.rule_set,
        partners=list(partners),
        now=utcnow(),
        request_id=request_id,
    )


async def _count(sessionmaker: async_sessionmaker[AsyncSession], model: Any) -> int:
    async with sessionmaker() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def test_concurrent_screenings_share_transactions_and_each_is_stored_whole(
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    key = await _with_partner(http, api_key)
    groups_before, screenings_before, retries_before = _group_metrics()
    timed_before = _timed_groups()
    bodies = [adult_consenting(subject__case_code=f"GRP-{i:03d}") for i in range(40)]
    # Two screenings of one person in the same burst share one subject.
    bodies.append(adult_consenting(subject__case_code="GRP-000"))

    responses = await _post_all(http, key, bodies)

    assert [r.status_code for r in responses] == [201] * len(bodies), [
        r.text for r in responses if r.status_code != 201
    ]
    groups, screenings, retries = _group_metrics()
    assert screenings - screenings_before == len(bodies)
    # Grouped: fewer transactions than screenings (each group is one transaction).
    assert groups - groups_before < len(bodies)
    assert retries == retries_before
    assert _timed_groups() - timed_before == groups - groups_before

    async with sessionmaker() as session:
        stored = {
            s.id: s
            for s in (await session.execute(select(Screening))).scalars()
            if s.organisation == ORGANISATION
        }
        subjects = {s.id: s for s in (await session.execute(select(Subject))).scalars()}
        referrals = list((await session.execute(select(Referral))).scalars())
        decisions = list((await session.execute(select(Decision))).scalars())
        deliveries = list((await session.execute(select(Delivery))).scalars())
        received = list(
            (
                await session.execute(
                    select(AuditEvent).where(AuditEvent.action == "screening.received")
                )
            ).scalars()
        )
        report = await verify_database(session, settings)
    assert report.ok, report
    assert {str(i) for i in stored} == {b["id"] for b in bodies}
    assert len(subjects) == 40
    assert (
        stored[uuid.UUID(bodies[0]["id"])].subject_id
        == stored[uuid.UUID(bodies[-1]["id"])].subject_id
    )
    # Every screening has its decision, referrals (each on its screening's subject) and
    # deliveries, and the receipt it was answered with matches what was stored.
    assert Counter(d.screening_id for d in decisions) == Counter(stored.keys())
    for response in responses:
        answer = response.json()
        mine = [r for r in referrals if str(r.screening_id) == answer["id"]]
        assert {str(r.id) for r in mine} == {r["id"] for r in answer["decision"]["referrals"]}
        assert {r.subject_id for r in mine} == {stored[uuid.UUID(answer["id"])].subject_id}
    assert {d.referral_id for d in deliveries} == {r.id for r in referrals if r.partner_id}
    assert {d.subject_id for d in deliveries} <= set(subjects)
    assert sorted(str(e.screening_id) for e in received) == sorted(b["id"] for b in bodies)


async def test_the_same_id_twice_in_a_burst_is_stored_once_and_answered_as_a_replay(
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    key = await _with_partner(http, api_key)
    body = adult_consenting()
    changed = {**body, "notes": "a different body under the same id"}
    others = [adult_consenting() for _ in range(6)]

    responses = await _post_all(http, key, [body, *others, body, changed])

    statuses = [r.status_code for r in responses]
    assert statuses[1:7] == [201] * 6
    # Whichever copy reached its group first is stored; which one that is depends on how
    # the concurrent requests were scheduled. Exactly one is created, an identical copy is
    # a replay of it, and a different body is a conflict.
    copies = {0: body, 7: body, 8: changed}
    [winner] = [i for i in copies if statuses[i] == 201]
    for i, sent in copies.items():
        if i == winner:
            continue
        if sent == copies[winner]:
            assert statuses[i] == 200
            assert responses[i].json()["replayed"] is True
            assert responses[i].json()["decision"] == responses[winner].json()["decision"]
        else:
            assert statuses[i] == 409
    async with sessionmaker() as session:
        assert (await session.get(Screening, uuid.UUID(body["id"]))) is not None
        decisions = (
            await session.execute(
                select(func.count())
                .select_from(Decision)
                .where(Decision.screening_id == uuid.UUID(body["id"]))
            )
        ).scalar_one()
    assert decisions == 1


async def test_a_screening_the_database_refuses_fails_alone(
    app: FastAPI,
    api_key: KeyFactory,
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    poisoned: str,
) -> None:
    good = [adult_consenting() for _ in range(12)]
    bad = adult_consenting(subject__case_code=poisoned)
    bodies = [*good[:6], bad, *good[6:]]
    # As uvicorn serves it: an unhandled error is a 500 answer, not an exception here.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://ruta.test") as http:
        key = await _with_partner(http, api_key)
        responses = await _post_all(http, key, bodies)

    by_id = {body["id"]: response for body, response in zip(bodies, responses, strict=True)}
    assert by_id[bad["id"]].status_code == 500
    assert by_id[bad["id"]].headers["content-type"].startswith("application/problem+json")
    assert "refused" not in by_id[bad["id"]].text  # no database detail leaks to the clinic
    assert [by_id[b["id"]].status_code for b in good] == [201] * len(good)
    async with sessionmaker() as session:
        ids = {str(i) for i in (await session.execute(select(Screening.id))).scalars()}
        audited = {
            str(i)
            for i in (
                await session.execute(
                    select(AuditEvent.screening_id).where(AuditEvent.action == "screening.received")
                )
            ).scalars()
        }
        report = await verify_database(session, settings)
    assert ids == audited == {b["id"] for b in good}
    assert report.ok, report


async def test_a_failed_group_is_written_again_one_screening_at_a_time(
    app: FastAPI, api_key: KeyFactory, settings: Settings, poisoned: str
) -> None:
    """All plans are queued before the committer runs, so they form one group with the
    refused one in it: the group fails, and each is written again alone."""
    committer = GroupCommitter(app.state.sessionmaker, settings, max_group=64)
    principal = await _principal(app, settings, await api_key("clinic", ORGANISATION))
    bodies = [adult_consenting() for _ in range(5)]
    bodies.insert(2, adult_consenting(subject__case_code=poisoned))
    groups_before, _, retries_before = _group_metrics()

    waiting = [
        asyncio.ensure_future(committer.submit(_plan(app, settings, principal, b))) for b in bodies
    ]
    outcomes = await asyncio.gather(*waiting, return_exceptions=True)
    await committer.close()

    groups, _, retries = _group_metrics()
    assert retries == retries_before + 1
    assert groups - groups_before == 1  # one group; its retries are not groups of their own
    assert isinstance(outcomes[2], DBAPIError)
    created = [o for i, o in enumerate(outcomes) if i != 2]
    assert all(isinstance(o, intake.IntakeResult) and o.created for o in created)


async def test_metrics_count_each_stored_decision_once(
    app: FastAPI, api_key: KeyFactory, settings: Settings
) -> None:
    """Decisions are counted when their transaction commits. The group below fails at its
    audit append, after every decision in it was recorded: that attempt counts nothing,
    the retries count the stored screenings, and the refused one never counts."""
    await refuse_inserts(app, "audit_events", "request_id", "refused-audit-1")
    committer = GroupCommitter(app.state.sessionmaker, settings, max_group=64)
    principal = await _principal(app, settings, await api_key("clinic", ORGANISATION))
    request_ids = ["ok-1", "refused-audit-1", "ok-2", "ok-3", "ok-4"]
    plans = [_plan(app, settings, principal, adult_consenting(), request_id=r) for r in request_ids]
    decisions_before, fired_before = counter_total(DECISIONS), counter_total(RULES_FIRED)
    retries_before = _group_metrics()[2]

    waiting = [asyncio.ensure_future(committer.submit(plan)) for plan in plans]
    outcomes = await asyncio.gather(*waiting, return_exceptions=True)
    await committer.close()

    assert _group_metrics()[2] == retries_before + 1  # the group did fail, late
    assert isinstance(outcomes[1], DBAPIError)
    stored = [p for i, p in enumerate(plans) if i != 1]
    decided = sum(len(p.referrals.decision.referrals) for p in stored)
    assert decided > 0
    assert counter_total(DECISIONS) - decisions_before == decided
    assert counter_total(RULES_FIRED) - fired_before == sum(len(p.referrals.fired) for p in stored)


@pytest.fixture
async def refused_delivery(app: FastAPI) -> str:
    """A request id whose outbox rows the database refuses: the group fails late, after its
    decisions and referrals are written."""
    await refuse_inserts(app, "deliveries", "request_id", "refused-delivery-1")
    return "refused-delivery-1"


async def test_a_group_that_fails_late_is_written_again_whole(
    app: FastAPI,
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    refused_delivery: str,
) -> None:
    """The group fails at its outbox rows, after its decisions and referrals were written
    and rolled back: the retry writes each screening again, every row included."""
    await _with_partner(http, api_key)
    async with app.state.sessionmaker() as session:
        partners = await directory_partners(session)
    committer = GroupCommitter(app.state.sessionmaker, settings, max_group=64)
    principal = await _principal(app, settings, await api_key("clinic", ORGANISATION))
    request_ids = ["ok-1", "ok-2", refused_delivery, "ok-3", "ok-4"]
    plans = [
        _plan(app, settings, principal, adult_consenting(), partners=partners, request_id=r)
        for r in request_ids
    ]
    assert all(p.referrals.referrals[0][2] is not None for p in plans)  # each has deliveries

    outcomes = await asyncio.gather(
        *(committer.submit(plan) for plan in plans), return_exceptions=True
    )
    await committer.close()

    assert isinstance(outcomes[2], DBAPIError)
    for index in (0, 1, 3, 4):
        outcome = outcomes[index]
        assert isinstance(outcome, intake.IntakeResult), outcome
        assert outcome.created
    async with sessionmaker() as session:
        referrals = list((await session.execute(select(Referral))).scalars())
        deliveries = list((await session.execute(select(Delivery))).scalars())
        report = await verify_database(session, settings)
    stored = {p.id for i, p in enumerate(plans) if i != 2}
    assert {r.screening_id for r in referrals} == stored
    assert {d.referral_id for d in deliveries} == {r.id for r in referrals if r.partner_id}
    assert report.ok, report


async def test_a_conflicting_id_in_a_group_leaves_no_subject_behind(
    app: FastAPI,
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    """write() is given a group in which one id is already stored by another organisation
    under a new case code: that one is not written (the caller answers 409), its subject
    does not outlive the group, and the rest of the group is stored."""
    key = await _with_partner(http, api_key)
    first = adult_consenting()
    assert (await http.post("/v1/screenings", json=first, headers=bearer(key))).status_code == 201
    other_clinic = await api_key("clinic", "Otra Clínica")
    subjects_before = await _count(sessionmaker, Subject)

    stolen_id = {**adult_consenting(subject__case_code="NEW-CASE-9"), "id": first["id"]}
    fresh = adult_consenting(subject__case_code="NEW-CASE-10")
    responses = await _post_all(http, other_clinic, [stolen_id, fresh])

    assert [r.status_code for r in responses] == [409, 201]
    async with sessionmaker() as session:
        case_codes = set((await session.execute(select(Subject.case_code))).scalars())
    assert "NEW-CASE-9" not in case_codes
    assert "NEW-CASE-10" in case_codes
    assert await _count(sessionmaker, Subject) == subjects_before + 1

    # The same through write() directly, in one group, so the stray subject is certain to
    # have been inserted and then dropped within the group's transaction.
    principal = await _principal(app, settings, other_clinic)
    plans = [
        _plan(app, settings, principal, body)
        for body in (
            {**adult_consenting(subject__case_code="NEW-CASE-11"), "id": first["id"]},
            adult_consenting(subject__case_code="NEW-CASE-12"),
        )
    ]
    async with app.state.sessionmaker() as session:
        results = await intake.write(session, settings, plans)
        await session.commit()
    assert results[0] is None
    assert results[1] is not None
    assert results[1].created
    async with sessionmaker() as session:
        case_codes = set((await session.execute(select(Subject.case_code))).scalars())
    assert "NEW-CASE-11" not in case_codes
    assert "NEW-CASE-12" in case_codes


async def test_a_group_size_of_one_gives_each_screening_its_own_transaction(
    settings: Settings,
) -> None:
    app = create_app(settings.model_copy(update={"intake_group_max": 1}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ruta.test") as http:
            key = await key_factory(app, settings)("clinic", ORGANISATION)
            groups_before, _, _ = _group_metrics()
            responses = await _post_all(http, key, [adult_consenting() for _ in range(8)])
            groups, _, _ = _group_metrics()
    assert [r.status_code for r in responses] == [201] * 8
    assert groups - groups_before == 8


async def test_close_writes_what_is_queued_before_it_returns(
    app: FastAPI, api_key: KeyFactory, settings: Settings
) -> None:
    """Shutdown (the app's lifespan end calls close()) commits the screenings already
    handed to the committer; none is dropped."""
    committer = GroupCommitter(app.state.sessionmaker, settings, max_group=4)
    principal = await _principal(app, settings, await api_key("clinic", ORGANISATION))
    plans = [_plan(app, settings, principal, adult_consenting()) for _ in range(10)]
    waiting = [asyncio.ensure_future(committer.submit(plan)) for plan in plans]
    await asyncio.sleep(0)  # every submit has queued its plan

    await committer.close()

    results = await asyncio.gather(*waiting)
    assert all(r is not None and r.created for r in results)
    async with app.state.sessionmaker() as session:
        stored = set((await session.execute(select(Screening.id))).scalars())
    assert stored >= {plan.id for plan in plans}


async def test_on_postgresql_the_next_group_is_written_while_one_waits_to_commit(
    app: FastAPI, api_key: KeyFactory, settings: Settings
) -> None:
    """Two groups in flight: while the first waits for the audit chain's lock at commit,
    the next group's statements already run, and both commit once the lock is free. On
    SQLite, where every transaction holds the one write lock, one group at a time."""
    committer = GroupCommitter(app.state.sessionmaker, settings, max_group=64)
    if app.state.engine.dialect.name != "postgresql":
        assert committer._in_flight == 1
        return
    assert committer._in_flight == 2
    principal = await _principal(app, settings, await api_key("clinic", ORGANISATION))
    groups_before, _, _ = _group_metrics()
    async with app.state.engine.connect() as holder:
        # Hold the chain lock as another replica's commit would.
        await holder.execute(select(func.pg_advisory_lock(CHAIN_LOCK_KEY)))
        first = asyncio.ensure_future(
            committer.submit(_plan(app, settings, principal, adult_consenting()))
        )
        await _until(lambda: _group_metrics()[0] - groups_before == 1)
        later = [
            asyncio.ensure_future(
                committer.submit(_plan(app, settings, principal, adult_consenting()))
            )
            for _ in range(3)
        ]
        await _until(lambda: _group_metrics()[0] - groups_before == 2)
        await asyncio.sleep(0.2)
        assert not first.done()
        assert not any(w.done() for w in later)
        assert _group_metrics()[0] - groups_before == 2  # a third waits for a free slot
        await holder.execute(select(func.pg_advisory_unlock(CHAIN_LOCK_KEY)))
    results = await asyncio.gather(first, *later)
    await committer.close()
    assert all(r is not None and r.created for r in results)
    async with app.state.sessionmaker() as session:
        assert (await verify_database(session, settings)).ok


async def _until(condition: Any) -> None:
    """Wait (at most 10 s) until ``condition()`` holds."""
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110 (a metric, not an event, is what changes)
            await asyncio.sleep(0.01)


async def test_a_copy_of_an_id_being_written_waits_for_that_group(
    app: FastAPI, api_key: KeyFactory, settings: Settings
) -> None:
    """With two groups in flight, a second copy of an id whose group is still being written
    does not go into the next group (the two could each wait on the other's rows): it waits,
    and is answered as the replay it is once the first copy is committed."""
    if app.state.engine.dialect.name != "postgresql":
        pytest.skip("one group at a time on SQLite")
    committer = GroupCommitter(app.state.sessionmaker, settings, max_group=64)
    principal = await _principal(app, settings, await api_key("clinic", ORGANISATION))
    body = adult_consenting()
    groups_before, _, _ = _group_metrics()
    async with app.state.engine.connect() as holder:
        await holder.execute(select(func.pg_advisory_lock(CHAIN_LOCK_KEY)))
        first = asyncio.ensure_future(committer.submit(_plan(app, settings, principal, body)))
        await _until(lambda: _group_metrics()[0] - groups_before == 1)
        copy = asyncio.ensure_future(committer.submit(_plan(app, settings, principal, body)))
        other = asyncio.ensure_future(
            committer.submit(_plan(app, settings, principal, adult_consenting()))
        )
        await _until(lambda: _group_metrics()[0] - groups_before == 2)
        await asyncio.sleep(0.2)
        assert not copy.done()
        assert _group_metrics()[0] - groups_before == 2  # no third group for the copy
        await holder.execute(select(func.pg_advisory_unlock(CHAIN_LOCK_KEY)))
    original, replayed, new = await asyncio.gather(first, copy, other)
    await committer.close()
    assert original is not None
    assert original.created
    assert replayed is None  # the request answers it with intake.replay()
    assert new is not None
    assert new.created
    assert _group_metrics()[0] - groups_before == 3  # the copy went in a later group


def _no_emergency() -> dict[str, Any]:
    """Routine and urgent referrals only (as in bench/delivery.py)."""
    body = adult_consenting(
        safety__trafficker_nearby=False,
        safety__can_return_safely=True,
        health__hours_since_sexual_violence=...,
    )
    body["mental_health"] = {"suicidal": "none", "positive_screen": True}
    return body


class _Ordering:
    """Routine and emergency plans for one committer writing groups of two, one at a time,
    and the order in which their requests were answered."""

    def __init__(self, committer: GroupCommitter, routine: list[Plan], emergencies: list[Plan]):
        self.committer, self.routine, self.emergencies = committer, routine, emergencies
        self.finished: list[uuid.UUID] = []

    @classmethod
    async def make(
        cls, app: FastAPI, api_key: KeyFactory, settings: Settings, routine: int, emergencies: int
    ) -> _Ordering:
        committer = GroupCommitter(app.state.sessionmaker, settings, max_group=2, in_flight=1)
        principal = await _principal(app, settings, await api_key("clinic", ORGANISATION))
        return cls(
            committer,
            [_plan(app, settings, principal, _no_emergency()) for _ in range(routine)],
            [
                _plan(app, settings, principal, adult_consenting(safety__immediate_danger=True))
                for _ in range(emergencies)
            ],
        )

    async def submit(self, plan: Plan) -> None:
        assert await self.committer.submit(plan) is not None
        self.finished.append(plan.id)


async def test_an_emergency_goes_in_the_next_group_ahead_of_queued_screenings(
    app: FastAPI, api_key: KeyFactory, settings: Settings
) -> None:
    queue = await _Ordering.make(app, api_key, settings, routine=5, emergencies=2)
    committer, routine, emergencies = queue.committer, queue.routine, queue.emergencies
    assert not any(p.emergency for p in routine)
    assert all(p.emergency for p in emergencies)
    submit, finished = queue.submit, queue.finished

    # All are queued before the committer takes its first group: routine ones first.
    await asyncio.gather(*(submit(p) for p in [*routine, *emergencies]))
    await committer.close()

    # Groups of two, one at a time: the emergencies, in their order, form the first group.
    assert finished[:2] == [p.id for p in emergencies]
    assert set(finished[2:]) == {p.id for p in routine}


async def test_a_burst_of_emergencies_keeps_its_order_ahead_of_routine_work(
    app: FastAPI, api_key: KeyFactory, settings: Settings
) -> None:
    """More emergencies than a group holds, queued behind routine screenings and then
    behind each other: they are written first and in arrival order, across groups."""
    queue = await _Ordering.make(app, api_key, settings, routine=3, emergencies=5)
    committer, routine, emergencies = queue.committer, queue.routine, queue.emergencies
    submit, finished = queue.submit, queue.finished

    first = [asyncio.ensure_future(submit(p)) for p in [*routine, *emergencies[:3]]]
    for _ in range(1000):  # until the first group (two emergencies) is being written
        if committer._writing_ids:
            break
        await asyncio.sleep(0)
    assert committer._writing_ids
    second = [asyncio.ensure_future(submit(p)) for p in emergencies[3:]]
    await asyncio.gather(*first, *second)
    await committer.close()

    assert finished[:5] == [p.id for p in emergencies]
    assert set(finished[5:]) == {p.id for p in routine}


async def test_a_group_costs_the_same_statements_whatever_its_size(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory, settings: Settings
) -> None:
    """What group commit is for: each table gets one INSERT for the whole group, so a group
    of 16 screenings (each with its decision, referrals, history, outbox rows and audit
    events) takes exactly as many statements as a group of 2. A change that puts a
    statement per screening back fails here."""
    await _with_partner(http, api_key)
    async with app.state.sessionmaker() as session:
        partners = await directory_partners(session)
    principal = await _principal(app, settings, await api_key("clinic", ORGANISATION))
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        statements.append(statement)

    async def group_of(size: int) -> list[str]:
        plans = [
            _plan(
                app,
                settings,
                principal,
                adult_consenting(subject__case_code=f"GRP-{uuid.uuid4().hex[:8]}"),
                partners=partners,
            )
            for _ in range(size)
        ]
        assert all(p.referrals.referrals[0][2] is not None for p in plans)  # outbox rows too
        statements.clear()
        event.listen(app.state.engine.sync_engine, "before_cursor_execute", count)
        try:
            async with app.state.sessionmaker() as session:
                results = await intake.write(session, settings, plans)
                await session.commit()
        finally:
            event.remove(app.state.engine.sync_engine, "before_cursor_execute", count)
        assert all(r is not None and r.created for r in results)
        return [s.split("(")[0].strip()[:40] for s in statements]

    small, large = await group_of(2), await group_of(16)
    assert len(large) == len(small), (small, large)
    assert len(small) <= 12, small
    if app.state.engine.dialect.name == "postgresql":
        # Each of intake's tables takes its rows as one JSON document (app.db.bulk_insert);
        # a row builder that leaves out a column with a Python default would silently put
        # that table back on the slower generic INSERT.
        inserts = {s.split()[2]: s for s in statements if s.startswith("INSERT INTO")}
        inserts.pop("audit_checkpoints", None)  # one signed row now and then, not intake's
        assert set(inserts) == set(INTAKE_TABLES)
        assert all("jsonb_populate_recordset" in s for s in inserts.values()), inserts
