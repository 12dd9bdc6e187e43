"""Where referrals go after intake (docs/protocol.md, rule 13), on SQLite and PostgreSQL,
on a simulated clock: deadlines by urgency (2 hours when life is at risk), emergencies
that find no partner open, and — for any screening Hypothesis builds — no law-enforcement
partner ever receiving a body without the person's scope, through intake, every fallback,
missed deadlines, escalation and replay."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from sqlalchemy import select

from app import audit
from app.delivery.outbox import replay_dead_letter
from app.errors import Conflict
from app.models import AuditEvent, Delivery, Referral
from app.models.base import utcnow
from app.referrals import routing
from app.rules.facts import facts_at
from app.schemas.screening import ConsentScope, ScreeningIn
from tests.conftest import KeyFactory, bearer
from tests.delivery.conftest import add_partner, deliveries, referral
from tests.factories import screening
from tests.strategies import screening_documents

URL = "http://127.0.0.1:9/inbox"
LIMA = ZoneInfo("America/Lima")
OFFICE = {
    "timezone": "America/Lima",
    "schedule": [
        {"days": ["mon", "tue", "wed", "thu", "fri"], "opens": "08:00", "closes": "17:00"}
    ],
}


async def clinic_post(http: httpx.AsyncClient, api_key: KeyFactory, body: dict[str, Any]) -> Any:
    clinic = bearer(await api_key("clinic", "Caravana de la Vida"))
    response = await http.post("/v1/screenings", json=body, headers=clinic)
    assert response.status_code == 201, response.text
    return response.json()


async def sweep(app: FastAPI, now: datetime) -> int:
    async with app.state.sessionmaker() as session:
        moved = await routing.sweep_deadlines(session, app.state.settings, now=now)
        await session.commit()
    return moved


def suicidal_adult() -> dict[str, Any]:
    return screening(
        subject__age=30,
        subject__unaccompanied_minor=False,
        consent__scopes=["psychological"],
        safety={},
        mental_health={"suicidal": "plan"},
        needs_expressed=[],
        indicators={},
    )


async def test_life_at_risk_moves_on_after_two_hours(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    """A suicidal plan: the first team has 2 hours to acknowledge, not 24."""
    for pid, priority in (("first-team", 1), ("second-team", 5)):
        await add_partner(
            http,
            api_key,
            pid,
            URL,
            role="psychosocial",
            services=["psychological"],
            priority=priority,
        )
    receipt = await clinic_post(http, api_key, suicidal_adult())
    [item] = receipt["decision"]["referrals"]
    assert item["urgency"] == "emergency"
    assert "life_at_risk" in item["flags"]
    row = await referral(app, item["id"])
    assert row.deadline_at is not None
    assert row.deadline_at - row.created_at == timedelta(hours=2)
    assert await sweep(app, row.created_at + timedelta(hours=1, minutes=59)) == 0
    assert (await referral(app, item["id"])).partner_id == "first-team"
    assert await sweep(app, row.created_at + timedelta(hours=2, minutes=1)) == 1
    moved = await referral(app, item["id"])
    assert (moved.partner_id, moved.tried_partner_ids) == ("second-team", ["first-team"])
    assert moved.deadline_at is not None
    assert moved.deadline_at - moved.updated_at == timedelta(hours=2)


async def test_other_emergencies_have_a_day_urgent_three_and_routine_fourteen(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    await add_partner(http, api_key, "everything", URL)
    body = screening(
        subject__age=30,
        subject__unaccompanied_minor=False,
        safety={},
        health={"hours_since_sexual_violence": 10, "pregnant": True},
        mental_health={"suicidal": "ideation"},
        indicators={"exploitation_types": ["labour"]},
        needs_expressed=[],
        legal={"unpaid_wages": True},
        consent__scopes=["medical", "psychological", "legal", "protection"],
    )
    body["source"]["screened_at"] = utcnow().isoformat()  # the 10 hours are still 10
    receipt = await clinic_post(http, api_key, body)
    spans = {}
    for item in receipt["decision"]["referrals"]:
        row = await referral(app, item["id"])
        assert row.deadline_at is not None
        spans[item["service"]] = (item["urgency"], row.deadline_at - row.created_at)
    assert spans["medical"] == ("emergency", timedelta(hours=24))
    assert spans["psychological"] == ("urgent", timedelta(hours=72))
    assert spans["legal"] == ("routine", timedelta(days=14))


async def test_an_emergency_with_no_partner_open_goes_to_a_closed_one_and_alerts_a_person(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    """Posted on a Sunday: the only team keeps office hours. The referral still goes to it
    (it will be there on Monday), and a person is alerted now, with the reason."""
    await add_partner(
        http,
        api_key,
        "office-team",
        URL,
        role="psychosocial",
        services=["psychological"],
        hours=OFFICE,
    )
    body = suicidal_adult()
    sunday = datetime(2026, 11, 29, 10, 0, tzinfo=LIMA)
    body["source"]["screened_at"] = sunday.isoformat()
    from app.partners.matching import SubjectFacts, match
    from app.partners.service import directory_partners

    async with app.state.sessionmaker() as session:
        partners = await directory_partners(session)
    decided = app.state.rule_set.evaluate(ScreeningIn.model_validate(body)).referrals[0]
    subject = SubjectFacts.from_screening(ScreeningIn.model_validate(body), sunday.date())
    on_sunday = match(decided, subject, partners, sunday, settings=app.state.settings)
    assert on_sunday.partner_id == "office-team"
    assert on_sunday.escalation is not None
    assert on_sunday.needs_human

    # Through intake now: closed or open depends on today's clock, so make it closed.
    async with app.state.sessionmaker() as session:
        from app.models import PartnerRow

        row = await session.get(PartnerRow, "office-team")
        assert row is not None
        row.hours = {
            "timezone": "UTC",
            "always_open": False,
            "schedule": [{"days": ["mon"], "opens": "00:00", "closes": "00:01"}],
        }
        await session.commit()
    receipt = await clinic_post(http, api_key, suicidal_adult())
    [item] = receipt["decision"]["referrals"]
    assert item["partner"]["id"] == "office-team"
    assert item["status"] == "queued"
    assert (item["needs_human"], item["human_reason"]) == (True, "emergency_no_partner_open")
    async with app.state.sessionmaker() as session:
        escalations = list(
            (
                await session.execute(
                    select(AuditEvent).where(
                        AuditEvent.referral_id == uuid.UUID(item["id"]),
                        AuditEvent.action == "referral.escalated",
                    )
                )
            ).scalars()
        )
    assert [e.data["reason"] for e in escalations] == ["emergency_no_partner_open"]
    # When the closed team answers after all, nobody needs to act any more.
    team = bearer(await api_key("partner", "office-team"))
    reply = await http.post(
        f"/v1/referrals/{item['id']}/status", json={"status": "accepted"}, headers=team
    )
    assert reply.status_code == 200, reply.text
    row = await referral(app, item["id"])
    assert (row.needs_human, row.human_reason) == (False, None)


#: Law enforcement in every form that could tempt a router: national, first in priority,
#: always open, every service, room for everyone.
TEMPTING = [
    ("police", "law_enforcement", 0),
    ("prosecutor", "law_enforcement", 0),
    ("shelter-a", "shelter", 10),
    ("authority", "child_protection_authority", 10),
    ("health", "health_facility", 10),
    ("legal-aid", "legal_aid", 10),
]


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(document=screening_documents())
async def test_no_law_enforcement_partner_ever_receives_without_the_scope(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory, document: dict[str, Any]
) -> None:
    """Every body queued for a law-enforcement partner belongs to a referral addressed to
    law enforcement, of an adult who wants to report and consented to it, after intake,
    after every partner has rejected in turn, after deadlines far in the future, and a
    replay of a dead letter to the police of any other referral is refused."""
    async with app.state.sessionmaker() as session:
        from app.models import PartnerRow

        known = {r.id for r in (await session.execute(select(PartnerRow))).scalars()}
    for pid, role, priority in TEMPTING:
        if pid not in known:
            await add_partner(
                http,
                api_key,
                pid,
                URL,
                role=role,
                priority=priority,
                services=["medical", "psychological", "legal", "protection"],
            )
    document = {**document, "id": str(uuid.uuid4())}
    await clinic_post(http, api_key, document)
    screening_id = uuid.UUID(document["id"])
    for _round in range(len(TEMPTING) + 1):
        async with app.state.sessionmaker() as session:
            live = list(
                (
                    await session.execute(
                        select(Referral).where(
                            Referral.screening_id == screening_id,
                            Referral.partner_id.is_not(None),
                            Referral.status.in_(["queued", "delivered", "received"]),
                        )
                    )
                ).scalars()
            )
        if not live:
            break
        for row in live:
            assert row.partner_id is not None
            key = bearer(await api_key("partner", row.partner_id))
            reply = await http.post(
                f"/v1/referrals/{row.id}/status",
                json={"status": "rejected", "reason": "no_capacity"},
                headers=key,
            )
            assert reply.status_code == 200, reply.text
    await sweep(app, datetime.now(ZoneInfo("UTC")) + timedelta(days=30))

    s = ScreeningIn.model_validate(document)
    _fired, child, _lacks = app.state.rule_set.match(facts_at(s, None).screening)
    may = (
        not child
        and s.consent.given
        and not s.consent.lacks_capacity
        and ConsentScope.law_enforcement in s.consent.scopes
        and s.legal.wants_police_report
    )
    async with app.state.sessionmaker() as session:
        rows = {
            r.id: r
            for r in (
                await session.execute(select(Referral).where(Referral.screening_id == screening_id))
            ).scalars()
        }
    police = [
        d
        for d in await deliveries(app)
        if d.referral_id in rows
        and d.partner_id in ("police", "prosecutor")
        and d.event_type == "referral.created"
    ]
    for delivery in police:
        assert rows[delivery.referral_id].recipient == "law_enforcement"
        assert may
    for row in rows.values():
        if row.recipient != "law_enforcement":
            assert row.partner_id not in ("police", "prosecutor")
            assert not set(row.tried_partner_ids) & {"police", "prosecutor"}
    # Replay: a dead letter goes only to the partner that holds the referral now.
    async with app.state.sessionmaker() as session:
        for delivery in (
            await session.execute(select(Delivery).where(Delivery.referral_id.in_(list(rows))))
        ).scalars():
            if delivery.event_type != "referral.created":
                continue
            delivery.status = "dead"
            await session.flush()
            referral_row = rows[delivery.referral_id]
            holds = referral_row.partner_id == delivery.partner_id
            revoked = referral_row.status == "revoked"
            try:
                await replay_dead_letter(
                    session, delivery.id, actor=audit.system("test"), now=delivery.created_at
                )
                replayed = True
            except Conflict:
                replayed = False
            assert replayed == (holds and not revoked)
        await session.rollback()


async def test_referrals_of_screenings_without_the_scope_never_list_the_police_as_fallback(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    """The women's shelter is full: an adult in danger who refused consent stays held for a
    person; she is not sent to the police, and the police are not even a fallback."""
    await add_partner(
        http,
        api_key,
        "full-shelter",
        URL,
        role="shelter",
        services=["protection"],
        capacity={"available": 0, "maximum": 5},
    )
    await add_partner(
        http,
        api_key,
        "police",
        URL,
        role="law_enforcement",
        services=["protection"],
        priority=0,
    )
    body = screening(
        subject__age=30,
        subject__unaccompanied_minor=False,
        consent={"given": False, "scopes": [], "share_identifying": False},
        safety={"trafficker_nearby": True},
        needs_expressed=[],
    )
    receipt = await clinic_post(http, api_key, body)
    [protection] = [r for r in receipt["decision"]["referrals"] if r["service"] == "protection"]
    assert protection["legal_basis"] == "vital_interest"
    assert protection["partner"] is None
    assert (protection["status"], protection["needs_human"]) == ("held", True)
    row = await referral(app, protection["id"])
    assert "police" not in row.match["fallback_ids"]
    assert {p["partner_id"]: p["reason"] for p in row.match["passed_over"]}["police"] == (
        "role_not_allowed"
    )
    async with app.state.sessionmaker() as session:
        assert await routing.retry_held(session, app.state.settings, now=row.created_at) == 0
