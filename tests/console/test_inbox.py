"""The partner's console: inbox, opening a referral (an audited disclosure), reporting
through the same state machine and fallback as the API, capacity. On both engines."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from app.models import PartnerRow
from app.models.audit import AuditEvent
from tests.conftest import KeyFactory, bearer
from tests.console.helpers import fresh_client, post_form, sign_in
from tests.delivery.conftest import add_partner, referral, submit
from tests.delivery.partner_server import PartnerServer


def _medical(receipt: dict[str, Any]) -> str:
    return str(next(r["id"] for r in receipt["decision"]["referrals"] if r["service"] == "medical"))


async def _setup(
    http: httpx.AsyncClient, api_key: KeyFactory, server: PartnerServer
) -> tuple[str, str]:
    """Two medical partners of two organisations; a referral with the first (priority)."""
    await add_partner(http, api_key, "first-org", server.url, services=["medical"], priority=1)
    await add_partner(http, api_key, "second-org", server.url, services=["medical"], priority=2)
    receipt = await submit(http, api_key)
    return _medical(receipt), await api_key("partner", "first-org")


async def _events(app: FastAPI, action: str) -> list[AuditEvent]:
    async with app.state.sessionmaker() as session:
        query = select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)
        return list((await session.execute(query)).scalars())


async def test_the_inbox_lists_the_organisations_referrals_with_their_deadline(
    http: httpx.AsyncClient, api_key: KeyFactory, partner_server: PartnerServer
) -> None:
    referral_id, key = await _setup(http, api_key, partner_server)
    await sign_in(http, key)
    page = await http.get("/console/inbox")
    assert page.status_code == 200
    assert f"/console/referrals/{referral_id}" in page.text
    assert "data-countdown" in page.text  # the deadline counts down
    assert "Content-Security-Policy" in page.headers
    assert page.headers["cache-control"] == "no-store"


async def test_opening_a_referral_is_an_audited_disclosure(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory, partner_server: PartnerServer
) -> None:
    referral_id, key = await _setup(http, api_key, partner_server)
    await sign_in(http, key)
    page = await http.get(f"/console/referrals/{referral_id}")
    assert page.status_code == 200
    assert "Aceptar" in page.text  # Spanish by default
    [read] = await _events(app, "personal_data.read")
    assert read.data["purpose"] == "console_view"
    assert read.referral_id is not None
    assert str(read.referral_id) == referral_id
    assert read.actor_role == "partner"
    assert read.data["fields"]  # which fields were shown, never their values
    # The same disclosure list the API gives auditors names this read.
    auditor = await api_key("auditor")
    screening_id = (await referral(app, referral_id)).screening_id
    listed = await http.get(f"/v1/screenings/{screening_id}/disclosures", headers=bearer(auditor))
    assert [d["kind"] for d in listed.json()["disclosures"]] == ["read"]


async def test_accept_start_complete_through_the_state_machine(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory, partner_server: PartnerServer
) -> None:
    referral_id, key = await _setup(http, api_key, partner_server)
    token = await sign_in(http, key)
    path = f"/console/referrals/{referral_id}/status"
    for status in ("accepted", "in-progress", "completed"):
        answer = await post_form(http, path, token, status=status)
        assert answer.status_code == 303, answer.text
        assert answer.headers["location"] == f"/console/referrals/{referral_id}?done={status}"
        assert (await referral(app, referral_id)).status == status
    # The state machine refuses what cannot follow, as the API does (409).
    refused = await post_form(http, path, token, status="accepted")
    assert refused.status_code == 409
    changed = await _events(app, "referral.status_changed")
    assert [e.data["status"] for e in changed] == ["accepted", "in-progress", "completed"]


async def test_rejecting_falls_back_to_the_next_partner(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory, partner_server: PartnerServer
) -> None:
    referral_id, key = await _setup(http, api_key, partner_server)
    token = await sign_in(http, key)
    path = f"/console/referrals/{referral_id}/status"
    missing = await post_form(http, path, token, status="rejected")
    assert missing.status_code == 422  # a rejection needs a reason
    answer = await post_form(http, path, token, status="rejected", reason="no_capacity")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/inbox?done=rejected"
    moved = await referral(app, referral_id)
    assert (moved.partner_id, moved.tried_partner_ids) == ("second-org", ["first-org"])
    # No longer this organisation's: its page is gone for it.
    assert (await http.get(f"/console/referrals/{referral_id}")).status_code == 404


async def test_another_organisations_referral_is_not_found(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory, partner_server: PartnerServer
) -> None:
    referral_id, _key = await _setup(http, api_key, partner_server)
    other = await api_key("partner", "second-org")
    token = await sign_in(http, other)
    page = await http.get(f"/console/referrals/{referral_id}")
    assert page.status_code == 404
    posted = await post_form(
        http, f"/console/referrals/{referral_id}/status", token, status="accepted"
    )
    assert posted.status_code == 404
    assert (await referral(app, referral_id)).status == "queued"
    assert await _events(app, "personal_data.read") == []


async def test_capacity_is_reported_for_the_organisations_own_partners(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory, partner_server: PartnerServer
) -> None:
    _referral_id, key = await _setup(http, api_key, partner_server)
    token = await sign_in(http, key)
    page = await http.get("/console/capacity")
    assert 'name="available"' in page.text
    answer = await post_form(http, "/console/capacity", token, partner_id="first-org", available=0)
    assert answer.status_code == 303
    other = await post_form(http, "/console/capacity", token, partner_id="second-org", available=0)
    assert other.status_code == 404
    async with app.state.sessionmaker() as session:
        rows = {
            r.id: r.capacity_available
            for r in (await session.execute(select(PartnerRow))).scalars()
        }
    assert rows["first-org"] == 0
    assert rows["second-org"] == 100
    [updated] = await _events(app, "admin.partner_updated")
    assert updated.partner_id == "first-org"


async def test_a_revoked_referral_shows_no_data(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory, partner_server: PartnerServer
) -> None:
    referral_id, key = await _setup(http, api_key, partner_server)
    clinic = await api_key("clinic", "Caravana de la Vida")
    screening_id = (await referral(app, referral_id)).screening_id
    withdrawn = await http.post(
        f"/v1/screenings/{screening_id}/consent/withdraw", headers=bearer(clinic)
    )
    assert withdrawn.status_code == 200
    async with fresh_client(http) as browser:
        await sign_in(browser, key)
        page = await browser.get(f"/console/referrals/{referral_id}")
    assert page.status_code == 200
    assert "revocada" in page.text
    assert await _events(app, "personal_data.read") == []
