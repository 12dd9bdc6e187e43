"""Closing the loop: partner reports, fallback, deadlines, held referrals, thin mode, and
what auditors see of it. Both engines. (Consent withdrawal: test_withdrawal.py.)"""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from app.models import AuditEvent, Delivery
from app.models.base import utcnow
from app.referrals import routing
from tests.conftest import KeyFactory, bearer
from tests.delivery.conftest import add_partner, deliveries, referral, submit

URL = "http://127.0.0.1:9/inbox"


async def _partner_key(api_key: KeyFactory, partner_id: str) -> dict[str, str]:
    """A partner client of the partner's organisation (its id: tests/delivery/conftest.py)."""
    return bearer(await api_key("partner", partner_id))


async def test_a_rejection_moves_the_referral_to_the_next_partner(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    await add_partner(http, api_key, "first", URL, services=["medical"], priority=1)
    await add_partner(http, api_key, "second", URL, services=["medical"], priority=5)
    receipt = await submit(http, api_key)
    [item] = [r for r in receipt["decision"]["referrals"] if r["service"] == "medical"]
    assert item["partner"]["id"] == "first"
    first = await _partner_key(api_key, "first")
    second = await _partner_key(api_key, "second")
    url = f"/v1/referrals/{item['id']}/status"

    assert (await http.post(url, json={"status": "rejected"}, headers=first)).status_code == 422
    not_mine = await http.post(url, json={"status": "received"}, headers=second)
    assert not_mine.status_code == 404
    too_soon = await http.post(url, json={"status": "completed"}, headers=first)
    assert too_soon.status_code == 409
    rejected = await http.post(
        url, json={"status": "rejected", "reason": "no_capacity"}, headers=first
    )
    assert rejected.status_code == 200, rejected.text

    moved = await referral(app, item["id"])
    assert (moved.partner_id, moved.status, moved.tried_partner_ids) == (
        "second",
        "queued",
        ["first"],
    )
    by_partner = {d.partner_id: d.status for d in await deliveries(app)}
    assert by_partner == {"first": "cancelled", "second": "pending"}
    # The first partner can no longer report on it; the second can.
    assert (await http.post(url, json={"status": "received"}, headers=first)).status_code == 404
    assert (await http.post(url, json={"status": "accepted"}, headers=second)).status_code == 200
    assert (await http.post(url, json={"status": "completed"}, headers=second)).status_code == 200
    assert (await referral(app, item["id"])).closed_at is not None

    # When the last partner also rejects, a person is alerted.
    receipt = await submit(http, api_key)
    [item] = [r for r in receipt["decision"]["referrals"] if r["service"] == "medical"]
    url = f"/v1/referrals/{item['id']}/status"
    for key in (first, second):
        reply = await http.post(
            url, json={"status": "rejected", "reason": "not_eligible"}, headers=key
        )
        assert reply.status_code == 200
    escalated = await referral(app, item["id"])
    assert (escalated.status, escalated.needs_human) == ("escalated", True)


async def test_a_missed_deadline_moves_the_referral_on(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    await add_partner(http, api_key, "slow", URL, services=["medical"], priority=1)
    await add_partner(http, api_key, "backup", URL, services=["medical"], priority=5)
    receipt = await submit(http, api_key)
    [item] = [r for r in receipt["decision"]["referrals"] if r["service"] == "medical"]
    row = await referral(app, item["id"])
    assert row.deadline_at is not None
    async with app.state.sessionmaker() as session:
        assert await routing.sweep_deadlines(session, app.state.settings, now=utcnow()) == 0
        later = row.deadline_at + timedelta(minutes=1)
        assert await routing.sweep_deadlines(session, app.state.settings, now=later) == 1
        await session.commit()
    moved = await referral(app, item["id"])
    assert (moved.partner_id, moved.tried_partner_ids) == ("backup", ["slow"])


async def test_no_eligible_partner_holds_the_referral_until_one_appears(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    receipt = await submit(http, api_key)
    held = receipt["decision"]["referrals"]
    assert held
    assert all(r["status"] == "held" and r["needs_human"] for r in held)
    assert all(r["partner"] is None for r in held)
    await add_partner(http, api_key, "newcomer", URL)
    async with app.state.sessionmaker() as session:
        routed = await routing.retry_held(session, app.state.settings, now=utcnow())
        await session.commit()
    assert routed == len(held)
    for item in held:
        row = await referral(app, item["id"])
        assert (row.status, row.partner_id, row.needs_human) == ("queued", "newcomer", False)


async def test_thin_mode_sends_a_link_and_records_each_fetch(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    await add_partner(
        http,
        api_key,
        "thin-legal",
        URL,
        endpoint={
            "url": URL,
            "secrets": ["whsec_dGVzdC1wYXJ0bmVyLXNlY3JldC0wMTIzNDU2Nzg5YWJjZA=="],
            "thin": True,
        },
    )
    receipt = await submit(http, api_key, subject__name="CANARY-THIN")
    item = receipt["decision"]["referrals"][0]
    from app.delivery.outbox import body_of

    async with app.state.sessionmaker() as session:
        delivery = (
            await session.execute(
                select(Delivery).where(Delivery.referral_id == uuid.UUID(item["id"]))
            )
        ).scalar_one()
        body = await body_of(session, app.state.settings, delivery)
    assert body is not None
    assert b"details_url" in body
    assert b"CANARY" not in body
    assert b"demographics" not in body
    own = await _partner_key(api_key, "thin-legal")
    fetched = await http.get(f"/v1/referrals/{item['id']}/details", headers=own)
    assert fetched.status_code == 200, fetched.text
    assert fetched.json()["type"] == "referral.details"
    stranger = bearer(await api_key("partner", "Someone Else"))
    assert (
        await http.get(f"/v1/referrals/{item['id']}/details", headers=stranger)
    ).status_code == 404
    # Ownership is by organisation id: a client whose organisation is the partner
    # organisation's display name is a stranger too.
    by_name = bearer(await api_key("partner", "Org thin-legal"))
    for attempt in (
        http.get(f"/v1/referrals/{item['id']}/details", headers=by_name),
        http.post(
            f"/v1/referrals/{item['id']}/status", json={"status": "received"}, headers=by_name
        ),
        http.patch("/v1/partners/me/capacity", json={"available": 0}, headers=by_name),
    ):
        assert (await attempt).status_code == 404
    async with app.state.sessionmaker() as session:
        reads = list(
            (
                await session.execute(
                    select(AuditEvent).where(AuditEvent.action == "personal_data.read")
                )
            ).scalars()
        )
    assert len(reads) == 1
    assert reads[0].data["purpose"] == "thin_referral_fetch"
    assert reads[0].partner_id == "thin-legal"


async def test_auditors_list_explain_and_see_disclosures(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    await add_partner(http, api_key, "everything", URL)
    for _ in range(3):
        receipt = await submit(http, api_key)
    auditor = bearer(await api_key("auditor"))
    everything = await http.get("/v1/referrals", params={"limit": 2}, headers=auditor)
    page = everything.json()
    assert len(page["items"]) == 2
    seen = [r["id"] for r in page["items"]]
    while page["next_cursor"]:
        page = (
            await http.get(
                "/v1/referrals",
                params={"limit": 2, "cursor": page["next_cursor"]},
                headers=auditor,
            )
        ).json()
        seen += [r["id"] for r in page["items"]]
    assert len(seen) == len(set(seen)) >= 6
    medical = await http.get("/v1/referrals", params={"service": "medical"}, headers=auditor)
    assert {r["service"] for r in medical.json()["items"]} == {"medical"}
    assert (
        await http.get("/v1/referrals", params={"cursor": "garbage"}, headers=auditor)
    ).status_code == 400

    item = receipt["decision"]["referrals"][0]
    explained = (await http.get(f"/v1/referrals/{item['id']}", headers=auditor)).json()
    assert explained["decision"]["rule_set"]["sha256"]
    assert explained["decision"]["trace"]["fired"]
    assert explained["match"]["partner_id"] == "everything"
    assert explained["history"][0]["to"] == "queued"
    assert explained["deliveries"][0]["webhook_id"].startswith("msg_")

    from app.delivery.worker import DeliveryWorker

    # Deliver to a closed port: an attempt is recorded, nothing is disclosed yet.
    # (After 5 failures the partner's circuit opens and the rest wait for a probe.)
    await DeliveryWorker(app.state.sessionmaker, app.state.settings).run_once()
    attempted = []
    for ident in seen:
        explained = (await http.get(f"/v1/referrals/{ident}", headers=auditor)).json()
        attempted += explained["deliveries"][0]["attempts"]
    assert attempted
    assert {a["outcome"] for a in attempted} == {"retry"}
    assert all(a["error"].startswith("connection:") for a in attempted)
    disclosures = await http.get(f"/v1/screenings/{receipt['id']}/disclosures", headers=auditor)
    assert disclosures.status_code == 200
    assert disclosures.json()["disclosures"] == []
