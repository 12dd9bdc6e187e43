"""The auditor's console: the referral log with the API's filters, one referral explained,
a screening's disclosures, and verifying the audit trail. On both engines."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from app.models.audit import AuditEvent
from tests.conftest import KeyFactory
from tests.console.helpers import sign_in
from tests.delivery.conftest import add_partner, submit
from tests.delivery.partner_server import PartnerServer


async def test_the_log_filters_like_the_api(
    http: httpx.AsyncClient, api_key: KeyFactory, partner_server: PartnerServer
) -> None:
    await add_partner(http, api_key, "hospital-mdd", partner_server.url, services=["medical"])
    receipt = await submit(http, api_key)
    ids = {r["service"]: r["id"] for r in receipt["decision"]["referrals"]}
    await sign_in(http, await api_key("auditor"))
    everything = await http.get("/console/log")
    assert all(f"/console/log/{i}" in everything.text for i in ids.values())
    medical = await http.get("/console/log?service=medical&status=&urgency=")
    assert f"/console/log/{ids['medical']}" in medical.text
    assert f"/console/log/{ids['legal']}" not in medical.text
    long_ago = await http.get("/console/log?created_from=2000-01-01&created_to=2000-01-02")
    assert not any(f"/console/log/{i}" in long_ago.text for i in ids.values())
    bad = await http.get("/console/log?urgency=whenever")
    assert bad.status_code == 404  # a malformed filter is a page that does not exist


async def test_an_explanation_shows_rules_values_reasons_match_history_and_attempts(
    http: httpx.AsyncClient, api_key: KeyFactory, partner_server: PartnerServer
) -> None:
    await add_partner(http, api_key, "hospital-mdd", partner_server.url, services=["medical"])
    receipt = await submit(http, api_key)
    medical = next(r for r in receipt["decision"]["referrals"] if r["service"] == "medical")
    await sign_in(http, await api_key("auditor"))
    page = await http.get(f"/console/log/{medical['id']}")
    assert page.status_code == 200
    text = page.text
    for reason in medical["reasons"]:
        assert reason["rule_id"] in text
        assert reason["text"]["es"] in text
        assert reason["text"]["en"] in text
    fired = receipt["decision"]["trace"]["fired"][0]
    assert next(iter(fired["inputs"])) in text  # the values each rule read
    assert "hospital-mdd" in text
    assert 'id="history"' in text
    assert 'id="deliveries"' in text
    disclosures = await http.get(f"/console/screenings/{receipt['id']}/disclosures")
    assert disclosures.status_code == 200
    missing = await http.get("/console/log/00000000-0000-4000-8000-000000000000")
    assert missing.status_code == 404


async def test_verifying_the_chain_from_the_console_is_recorded(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    await sign_in(http, await api_key("auditor"))
    before = await http.get("/console/audit")
    assert "/console/audit/verify" in before.text
    verified = await http.get("/console/audit/verify")
    assert verified.status_code == 200
    assert 'class="notice"' in verified.text
    async with app.state.sessionmaker() as session:
        events = list(
            (
                await session.execute(
                    select(AuditEvent).where(AuditEvent.action == "audit.verified")
                )
            ).scalars()
        )
    assert [e.data["ok"] for e in events] == [True]
    assert events[0].actor_role == "auditor"
    after = await http.get("/console/audit")
    assert "íntegra" in after.text or "unbroken" in after.text
