"""Bodies the worker delivers to a real partner on loopback, and the details a thin
partner fetches, validate against what the OpenAPI document publishes (the webhooks and
the details response); on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import httpx
from fastapi import FastAPI

from app.delivery.worker import DeliveryWorker
from tests.conftest import KeyFactory, bearer
from tests.delivery.conftest import add_partner, submit
from tests.delivery.partner_server import SECRET, PartnerServer
from tests.delivery.test_fhir_delivery import _drain
from tests.schemas.test_webhooks import check


async def test_delivered_bodies_and_fetched_details_match_the_document(
    app: FastAPI,
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    partner_server: PartnerServer,
    worker: DeliveryWorker,
) -> None:
    """Through the API and the worker, to a real partner on loopback: full and thin
    ruta-json and fhir-r4 partners, their details, and the notices after a withdrawal."""
    url = partner_server.url
    thin = {"url": url, "secrets": [SECRET], "thin": True}
    fhir = {"url": url, "secrets": [SECRET], "format": "fhir-r4"}
    await add_partner(http, api_key, "full-json", url, services=["medical"])
    await add_partner(http, api_key, "thin-json", url, services=["psychological"], endpoint=thin)
    await add_partner(http, api_key, "fhir-full", url, services=["legal"], endpoint=fhir)
    receipt = await submit(http, api_key, consent__share_identifying=True)
    await _drain(worker)
    referrals = receipt["decision"]["referrals"]
    [psychological] = [r for r in referrals if r["service"] == "psychological"]
    partner = bearer(await api_key("partner", "thin-json"))
    details = await http.get(f"/v1/referrals/{psychological['id']}/details", headers=partner)
    assert details.status_code == 200, details.text
    assert details.headers["content-type"] == "application/json"
    check("details", details.content)
    clinic = bearer(await api_key("clinic", "Caravana de la Vida"))
    answer = await http.post(f"/v1/screenings/{receipt['id']}/consent/withdraw", headers=clinic)
    assert answer.status_code == 200, answer.text
    await _drain(worker)

    seen = set()
    for received in partner_server.received:
        body = json.loads(received.body)
        kind = body["meta"]["tag"][0]["code"] if "meta" in body else body["type"]
        check(kind, received.body)
        seen.add((kind, body.get("thin")))
    assert {("referral.created", False), ("referral.created", True)} <= seen
    assert ("referral.revoked", None) in seen
    assert any(received.body.startswith(b'{"resourceType"') for received in partner_server.received)
