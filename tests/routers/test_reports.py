"""GET /v1/reports/…: aggregates in JSON and CSV, k-anonymous. On both engines.

The suppression rules themselves are held over generated data in
tests/reports/test_suppression.py; here, that the reports count the right things and
suppress what concerns fewer than k people."""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx
from fastapi import FastAPI

from tests.conftest import KeyFactory, bearer
from tests.delivery.conftest import add_partner, submit
from tests.delivery.partner_server import PartnerServer


async def _people(http: httpx.AsyncClient, api_key: KeyFactory, count: int) -> None:
    for n in range(count):
        await submit(http, api_key, subject__case_code=f"MDD-2026-{n:04d}")


async def _get(http: httpx.AsyncClient, key: str, path: str, **params: str) -> Any:
    response = await http.get(path, headers=bearer(key), params=params)
    assert response.status_code == 200, response.text
    return response.json() if params.get("format") != "csv" else response.text


async def test_small_counts_are_suppressed_at_the_default_k(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    await _people(http, api_key, 3)
    auditor = await api_key("auditor")
    report = await _get(http, auditor, "/v1/reports/referrals")
    assert report["k"] == 11
    [week] = report["rows"]
    assert week["total"] is None
    assert all(v is None or v == 0 for v in week["values"].values())
    assert "total" in week["suppressed"]
    text = await _get(http, auditor, "/v1/reports/referrals", format="csv")
    header, row = list(csv.reader(io.StringIO(text)))
    assert header[0] == "key"
    assert header[-1] == "total"
    assert row[-1] == "suppressed"


async def test_counts_are_shown_where_k_people_stand_behind_them(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory, partner_server: PartnerServer
) -> None:
    app.state.settings = app.state.settings.model_copy(update={"report_min_people": 3})
    await add_partner(http, api_key, "hospital-mdd", partner_server.url, services=["medical"])
    await _people(http, api_key, 4)
    admin = await api_key("admin")
    report = await _get(http, admin, "/v1/reports/referrals")
    [week] = report["rows"]
    shown = {k: v for k, v in week["values"].items() if v}
    # Four people, each with the same decision: every non-empty cell has 4 referrals.
    assert shown
    assert set(shown.values()) == {4}
    assert week["total"] == sum(shown.values())
    outcomes = await _get(http, admin, "/v1/reports/outcomes")
    [line] = outcomes["rows"]
    assert line["total"] == week["total"]
    assert line["values"]["direct"] == 4  # the medical referrals, with the hospital
    assert line["values"]["escalated"] == week["total"] - 4  # held: no partner for them
    rules = await _get(http, admin, "/v1/reports/rules")
    assert all(r["values"]["decisions"] == 4 for r in rules["rows"])


async def test_time_to_acknowledge_per_partner(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory, partner_server: PartnerServer
) -> None:
    app.state.settings = app.state.settings.model_copy(update={"report_min_people": 2})
    await add_partner(http, api_key, "hospital-mdd", partner_server.url, services=["medical"])
    partner = await api_key("partner", "hospital-mdd")
    for n in range(2):
        receipt = await submit(http, api_key, subject__case_code=f"MDD-2026-{n:04d}")
        medical = next(r for r in receipt["decision"]["referrals"] if r["service"] == "medical")
        answered = await http.post(
            f"/v1/referrals/{medical['id']}/status",
            json={"status": "accepted"},
            headers=bearer(partner),
        )
        assert answered.status_code == 200
    report = await _get(http, await api_key("auditor"), "/v1/reports/acknowledgement")
    [row] = report["rows"]
    assert row["key"] == "hospital-mdd"
    assert row["values"]["referrals"] == 2
    assert 0 <= row["values"]["median_hours"] <= row["values"]["p90_hours"] < 1


async def test_a_period_out_of_range_is_a_422_naming_the_parameter(
    http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    auditor = await api_key("auditor")
    backwards = await http.get(
        "/v1/reports/rules",
        headers=bearer(auditor),
        params={"since": "2026-12-01", "until": "2026-01-01"},
    )
    assert backwards.status_code == 422
    assert backwards.json()["errors"][0]["path"] == "query.since"
    too_long = await http.get(
        "/v1/reports/rules", headers=bearer(auditor), params={"since": "2020-01-01"}
    )
    assert too_long.status_code == 422
    bad = await http.get("/v1/reports/rules", headers=bearer(auditor), params={"since": "x"})
    assert bad.status_code == 422


async def test_partners_and_clinics_get_no_reports(
    http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    for role, org in (("partner", "org-a"), ("clinic", "Caravana de la Vida")):
        key = await api_key(role, org)
        assert (await http.get("/v1/reports/referrals", headers=bearer(key))).status_code == 403
