"""A partner's status report and a consent withdrawal leave a trace in the logs: one JSON
line each (and one per revoked referral), with ids and codes; the screening holds a canary
in every personal field, and none reaches the output."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from app.delivery.worker import DeliveryWorker
from app.observability import configure_logging
from tests.conftest import KeyFactory, bearer, log_lines, log_records
from tests.delivery.conftest import add_partner
from tests.delivery.partner_server import PartnerServer
from tests.delivery.test_traces import post_canary
from tests.test_canary import assert_clean


async def test_status_reports_and_withdrawals_leave_a_trace_without_personal_data(
    app: FastAPI,
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    partner_server: PartnerServer,
    capfd: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO")
    await add_partner(http, api_key, "trace-partner", partner_server.url)
    receipt = await post_canary(http, api_key)
    await DeliveryWorker(app.state.sessionmaker, app.state.settings).run_once()
    partner = await api_key("partner", "trace-partner")
    [first, *_] = [
        r
        for r in receipt["decision"]["referrals"]
        if (r.get("partner") or {}).get("id") == "trace-partner"
    ]
    reported = await http.post(
        f"/v1/referrals/{first['id']}/status",
        json={"status": "accepted"},
        headers=bearer(partner),
    )
    assert reported.status_code == 200, reported.text
    clinic = await api_key("clinic", "Caravana de la Vida")
    withdrawn = await http.post(
        f"/v1/screenings/{receipt['id']}/consent/withdraw", headers=bearer(clinic)
    )
    assert withdrawn.status_code == 200, withdrawn.text
    revoked = withdrawn.json()["revoked"]
    assert revoked

    output = capfd.readouterr()
    found = log_records(output.err)
    [status] = log_lines(found, "referral_status_reported", referral_id=first["id"])
    assert (status["previous_status"], status["status"]) == ("delivered", "accepted")
    assert (status["partner_id"], status["actor_role"]) == ("trace-partner", "partner")
    [withdrawal] = log_lines(found, "consent_withdrawn", screening_id=receipt["id"])
    assert withdrawal["revoked"] == len(revoked)
    assert withdrawal["actor_role"] == "clinic"
    lines = log_lines(found, "referral_revoked", reason="consent_withdrawn")
    assert {line["referral_id"] for line in lines} == set(revoked)
    assert all(line["partner_id"] == "trace-partner" for line in lines)
    assert_clean(output.out + output.err, "the withdrawal's log lines")
