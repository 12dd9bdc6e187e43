"""Consent withdrawn (docs/protocol.md, rule 14), on SQLite and PostgreSQL, through the API
and a real partner server on loopback:

- exactly the referrals that rest on consent end revoked, for any screening Hypothesis
  builds; those on child-protection duty or vital interest stand, whatever their service;
- every partner that received something, or can fetch it (thin mode included), is told;
- after revocation no partner can read the person's data, and its body is never sent again.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from sqlalchemy import select

from app import audit
from app.delivery.worker import DeliveryWorker
from app.errors import Conflict
from app.models import AuditEvent, Delivery, Referral
from app.models.base import utcnow
from tests.conftest import KeyFactory, bearer
from tests.delivery.conftest import Clock, add_partner, deliveries, referral
from tests.delivery.partner_server import PartnerServer
from tests.factories import screening
from tests.strategies import screening_documents

ALL = ["medical", "psychological", "legal", "protection"]
#: One partner of every kind that takes referrals, all national and always open: every
#: decided referral finds one. The legal and protection providers are thin.
DIRECTORY: dict[str, dict[str, Any]] = {
    "authority": {"role": "child_protection_authority", "services": ["protection"]},
    "shelter": {"role": "shelter", "services": ["protection"]},
    "police": {"role": "law_enforcement", "services": ["protection", "legal"]},
    "clinic-partner": {"role": "health_facility", "services": ["medical", "psychological"]},
    "thin-legal": {"role": "legal_aid", "services": ["legal"], "thin": True},
}


@pytest.fixture
async def directory(
    http: httpx.AsyncClient, api_key: KeyFactory, partner_server: PartnerServer
) -> dict[str, dict[str, str]]:
    """The partners, and a partner API key for each (by organisation id)."""
    from tests.delivery.partner_server import SECRET

    keys = {}
    for partner_id, spec in DIRECTORY.items():
        endpoint = {"url": partner_server.url, "secrets": [SECRET], "thin": spec.get("thin", False)}
        await add_partner(
            http,
            api_key,
            partner_id,
            partner_server.url,
            role=spec["role"],
            services=spec["services"],
            endpoint=endpoint,
        )
        keys[partner_id] = bearer(await api_key("partner", partner_id))
    return keys


async def deliver_all(app: FastAPI) -> None:
    worker = DeliveryWorker(app.state.sessionmaker, app.state.settings, clock=Clock())
    for _ in range(5):
        if not await worker.run_once():
            return


async def post(http: httpx.AsyncClient, clinic: dict[str, str], body: dict[str, Any]) -> Any:
    created = await http.post("/v1/screenings", json=body, headers=clinic)
    assert created.status_code == 201, created.text
    return created.json()


async def referrals_of(app: FastAPI, screening_id: str) -> list[Referral]:
    async with app.state.sessionmaker() as session:
        query = select(Referral).where(Referral.screening_id == uuid.UUID(screening_id))
        return list((await session.execute(query)).scalars())


async def test_a_childs_care_stands_and_consent_referrals_are_revoked(
    app: FastAPI,
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    directory: dict[str, dict[str, str]],
    partner_server: PartnerServer,
) -> None:
    """The README's girl: the authority, the shelter and her emergency medical care after
    sexual violence rest on child-protection duty and stand; the psychological referral
    rests on her consent and is revoked. Every partner that received anything is told."""
    clinic = bearer(await api_key("clinic", "Caravana de la Vida"))
    child = screening()
    receipt = await post(http, clinic, child)
    by_service = {(r["service"], r["recipient"]): r for r in receipt["decision"]["referrals"]}
    medical = by_service["medical", "provider"]
    psychological = by_service["psychological", "provider"]
    assert medical["legal_basis"] == "child_protection_duty"
    assert psychological["legal_basis"] == "consent"
    await deliver_all(app)
    assert {d.status for d in await deliveries(app)} == {"delivered"}

    withdrawn = await http.post(f"/v1/screenings/{child['id']}/consent/withdraw", headers=clinic)
    assert withdrawn.status_code == 200, withdrawn.text
    answer = withdrawn.json()
    assert answer["revoked"] == [psychological["id"]]
    standing = {s["id"] for s in answer["standing"]}
    assert standing == {
        r["id"] for r in receipt["decision"]["referrals"] if r["id"] != psychological["id"]
    }
    assert (await referral(app, psychological["id"])).status == "revoked"
    assert (await referral(app, medical["id"])).status == "delivered"

    notices = {
        (str(d.referral_id), d.event_type, d.partner_id)
        for d in await deliveries(app)
        if d.event_type != "referral.created"
    }
    assert (psychological["id"], "referral.revoked", "clinic-partner") in notices
    for item in receipt["decision"]["referrals"]:
        if item["id"] != psychological["id"]:
            assert (item["id"], "referral.consent_withdrawn", item["partner"]["id"]) in notices
    await deliver_all(app)
    types = [r.body for r in partner_server.received]
    assert any(b'"referral.revoked"' in body for body in types)
    assert any(b'"stands":true' in body for body in types)

    # Idempotent: a second withdrawal revokes nothing more and sends nothing more.
    before = len(await deliveries(app))
    again = await http.post(f"/v1/screenings/{child['id']}/consent/withdraw", headers=clinic)
    assert again.json()["revoked"] == [psychological["id"]]
    assert len(await deliveries(app)) == before


async def test_after_revocation_details_are_gone_and_the_refusal_is_audited(
    app: FastAPI,
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    directory: dict[str, dict[str, str]],
) -> None:
    """A thin-mode partner: it is told (its body held no data, but it could fetch), its
    details answer 410 with no data, and the refused read is in the audit, not a
    disclosure."""
    clinic = bearer(await api_key("clinic", "Caravana de la Vida"))
    adult = screening(
        subject__age=30,
        subject__unaccompanied_minor=False,
        subject__name="CANARY-GONE",
        consent__scopes=["legal"],
        safety={},
        needs_expressed=["legal_advice"],
    )
    receipt = await post(http, clinic, adult)
    [legal] = [r for r in receipt["decision"]["referrals"] if r["service"] == "legal"]
    assert legal["partner"]["id"] == "thin-legal"
    await deliver_all(app)
    url = f"/v1/referrals/{legal['id']}/details"
    before = await http.get(url, headers=directory["thin-legal"])
    assert before.status_code == 200
    assert "Ruta-Consent" not in before.headers

    await http.post(f"/v1/screenings/{adult['id']}/consent/withdraw", headers=clinic)
    notices = [d for d in await deliveries(app) if d.event_type == "referral.revoked"]
    assert [(str(d.referral_id), d.partner_id) for d in notices] == [(legal["id"], "thin-legal")]
    gone = await http.get(url, headers=directory["thin-legal"])
    assert gone.status_code == 410
    assert gone.headers["content-type"].startswith("application/problem+json")
    assert "CANARY" not in gone.text
    async with app.state.sessionmaker() as session:
        events = list(
            (
                await session.execute(
                    select(AuditEvent)
                    .where(AuditEvent.referral_id == uuid.UUID(legal["id"]))
                    .order_by(AuditEvent.seq)
                )
            ).scalars()
        )
    reads = [e for e in events if e.action == "personal_data.read"]
    denied = [e for e in events if e.action == "request.denied"]
    assert len(reads) == 1  # the read before the withdrawal only
    assert [(e.data["status_code"], e.data["reason"]) for e in denied] == [
        (410, "referral_revoked")
    ]


async def test_a_revoked_referrals_dead_letter_is_never_sent_again(
    app: FastAPI,
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    directory: dict[str, dict[str, str]],
) -> None:
    clinic = bearer(await api_key("clinic", "Caravana de la Vida"))
    adult = screening(
        subject__age=30,
        subject__unaccompanied_minor=False,
        consent__scopes=["medical"],
        safety={},
        needs_expressed=["medical_care"],
    )
    receipt = await post(http, clinic, adult)
    [medical] = [r for r in receipt["decision"]["referrals"] if r["service"] == "medical"]
    async with app.state.sessionmaker() as session:
        delivery = (
            await session.execute(
                select(Delivery).where(Delivery.referral_id == uuid.UUID(medical["id"]))
            )
        ).scalar_one()
        delivery.status = "dead"  # as if retries ran out
        delivery.attempt_count = 9
        await session.commit()
    await http.post(f"/v1/screenings/{adult['id']}/consent/withdraw", headers=clinic)
    admin = bearer(await api_key("admin"))
    replay = await http.post(f"/v1/deliveries/{delivery.id}/replay", headers=admin)
    assert replay.status_code == 409
    assert replay.json()["reason"] == "referral_revoked"
    from app.delivery.outbox import replay_dead_letter

    async with app.state.sessionmaker() as session:
        with pytest.raises(Conflict):
            await replay_dead_letter(session, delivery.id, actor=audit.system("test"), now=utcnow())
    [row] = [d for d in await deliveries(app) if d.id == delivery.id]
    assert row.status == "dead"


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(document=screening_documents())
async def test_withdrawal_revokes_exactly_the_consent_basis_referrals(
    app: FastAPI,
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    directory: dict[str, dict[str, str]],
    document: dict[str, Any],
) -> None:
    """For any screening and its decision: after the withdrawal, a referral is revoked if and
    only if it rests on consent; every other keeps its status; every partner that received
    a revoked referral got the revocation notice; the details of a revoked referral answer
    410 to its partner, and those of a referral that stands say that consent was withdrawn."""
    document = {**document, "id": str(uuid.uuid4())}
    clinic = bearer(await api_key("clinic", "Caravana de la Vida"))
    await post(http, clinic, document)
    await deliver_all(app)
    before = {str(r.id): r.status for r in await referrals_of(app, document["id"])}
    withdrawn = await http.post(f"/v1/screenings/{document['id']}/consent/withdraw", headers=clinic)
    assert withdrawn.status_code == 200, withdrawn.text
    after = await referrals_of(app, document["id"])
    consent = {str(r.id) for r in after if r.legal_basis == "consent"}
    assert set(withdrawn.json()["revoked"]) == consent
    notices = {
        (str(d.referral_id), d.partner_id, d.event_type)
        for d in await deliveries(app)
        if d.referral_id is not None and d.event_type != "referral.created"
    }
    for row in after:
        key = str(row.id)
        if key in consent:
            assert row.status == "revoked"
            if before[key] == "delivered":
                assert (key, row.partner_id, "referral.revoked") in notices
        else:
            assert row.status == before[key]
            if row.partner_id is not None:
                assert (key, row.partner_id, "referral.consent_withdrawn") in notices
        if row.partner_id is None or before[key] != "delivered":
            continue
        details = await http.get(f"/v1/referrals/{key}/details", headers=directory[row.partner_id])
        if key in consent:
            assert details.status_code == 410
        else:
            assert details.status_code == 200
            assert details.headers["Ruta-Consent"].startswith("withdrawn")
