"""A scripted scenario: the audit events match the committed actions one for one, nothing
rolled back leaves an event, and no canary from the screenings reaches the audit table.

Intake calls the writer itself; this test drives it the way the routes do, including the
batch path's savepoints.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import audit
from app.audit import Action
from app.audit.store import verify_database
from app.auth import Principal, create_client
from app.errors import Conflict
from app.models import AuditEvent, Role
from app.models.base import utcnow
from app.rules import DEFAULT_RULES_PATH, load_rule_set
from app.schemas.screening import ScreeningIn
from app.services import intake
from app.settings import Settings
from tests.factories import screening

ORG = "Caravana de la Vida"
CANARIES = {
    "subject.name": "CANARY-NAME Rosa Quispe 5521",
    "phone": "+51 999 888 777",
    "email": "canary.5521@example.org",
    "notes": "CANARY-NOTE she was afraid to speak",
    "code_word": "CANARY-CODEWORD-GUACAMAYO",
}
ADAPTER: TypeAdapter[ScreeningIn] = TypeAdapter(ScreeningIn)
RULES = load_rule_set(DEFAULT_RULES_PATH)


def canary_screening() -> dict[str, Any]:
    body = screening()
    body["subject"]["name"] = CANARIES["subject.name"]
    body["subject"]["contact"] = {"phone": CANARIES["phone"], "email": CANARIES["email"]}
    body["notes"] = CANARIES["notes"]
    body["safety"]["safe_contact"] = {
        **(body["safety"].get("safe_contact") or {"channel": "through_clinic"}),
        "code_word": CANARIES["code_word"],
    }
    return body


async def _submit(
    session: AsyncSession, settings: Settings, principal: Principal, body: dict[str, Any]
) -> intake.IntakeResult:
    """The intake path: the action and its audit event, in the caller's transaction."""
    return await intake.submit_screening(
        session,
        settings,
        principal,
        ADAPTER.validate_python(body),
        rule_set=RULES,
        now=utcnow(),
    )


async def test_events_match_committed_actions_one_for_one(
    audited: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    async with audited() as session:
        client, _key = await create_client(
            session,
            secret_key=settings.secret_key.get_secret_value().encode(),
            name="clinic",
            role=Role.clinic,
            organisation=ORG,
            actor=audit.system("test-setup"),
        )
        await session.commit()
    principal = Principal(client_id=client.id, name="clinic", role=Role.clinic, organisation=ORG)
    expected: list[tuple[str, uuid.UUID | None]] = [("admin.client_created", None)]

    first = canary_screening()
    async with audited() as session:  # request 1: a new screening
        result = await _submit(session, settings, principal, first)
        await session.commit()
    expected.append(("screening.received", result.screening.id))

    async with audited() as session:  # request 2: an identical replay
        await _submit(session, settings, principal, first)
        await session.commit()
    expected.append(("screening.replayed", uuid.UUID(first["id"])))

    # Request 3: a batch; the middle item conflicts and is rolled back to its savepoint.
    other_age = 15 if first["subject"].get("age") != 15 else 14
    conflicting = {**first, "subject": {**first["subject"], "age": other_age}}
    batch = [canary_screening(), conflicting, canary_screening()]
    conflicts = 0
    async with audited() as session:
        for body in batch:
            try:
                async with session.begin_nested():
                    # An event recorded before the action fails must go with it.
                    await audit.record(
                        session,
                        action=Action.personal_data_read,
                        actor=principal,
                        screening_id=body["id"],
                        data={"fields": ["subject.name"], "purpose": "batch_dedup"},
                    )
                    await _submit(session, settings, principal, body)
            except Conflict:
                conflicts += 1
                continue
            expected.append(("personal_data.read", uuid.UUID(body["id"])))
            expected.append(("screening.received", uuid.UUID(body["id"])))
        await session.commit()
    assert conflicts == 1

    # Request 4: the action and its event are rolled back together.
    async with audited() as session:
        await _submit(session, settings, principal, canary_screening())
        await session.rollback()  # e.g. the decision step failed

    async with audited() as session:
        rows = (await session.execute(select(AuditEvent).order_by(AuditEvent.seq))).scalars()
        events = list(rows)
        report = await verify_database(session, settings)
        dump = " ".join(
            str(tuple(r)) for r in (await session.execute(select(AuditEvent.__table__))).all()
        )
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    # Intake's own downstream events (the decision and its referrals) follow each received
    # screening; the actions this scenario drives must match one for one, in order.
    driven = {"admin.client_created", "screening.received", "screening.replayed"}
    driven.add("personal_data.read")
    assert [(e.action, e.screening_id) for e in events if e.action in driven] == expected
    received = {e.screening_id for e in events if e.action == "screening.received"}
    decided = {e.screening_id for e in events if e.action == "decision.made"}
    assert received == decided
    assert report.ok, report
    assert events[1].data["personal_fields"] == sorted(
        ["notes", "safety.safe_contact", "subject.contact", "subject.name"]
    )
    for canary in CANARIES.values():
        assert canary.lower() not in dump.lower()
        for word in canary.split():
            if len(word) > 6 and not word.startswith("+"):
                assert word.lower() not in dump.lower(), word
