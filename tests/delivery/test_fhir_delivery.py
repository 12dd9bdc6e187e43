"""A fhir-r4 partner end to end: a real loopback partner receives signed FHIR R4 Bundles
(the referral, then the consent-revocation notice) that verify with standardwebhooks and
validate with fhir.resources; on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import httpx
from fastapi import FastAPI
from standardwebhooks.webhooks import Webhook

from app.delivery.worker import DeliveryWorker
from tests.conftest import KeyFactory, bearer
from tests.delivery.conftest import add_partner, deliveries, submit
from tests.delivery.partner_server import SECRET, PartnerServer
from tests.partners.fhir_check import inputs, one, validate

NOTES = "CANARY-NOTES-FHIR-5521 the camp owner keeps her papers"
NAME = "Canaria Inventada Quispe"


async def _drain(worker: DeliveryWorker) -> None:
    for _ in range(10):
        if await worker.run_once() == 0:
            return


async def test_a_fhir_partner_receives_signed_valid_bundles(
    app: FastAPI,
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    partner_server: PartnerServer,
    worker: DeliveryWorker,
) -> None:
    await add_partner(
        http,
        api_key,
        "centro-fhir",
        partner_server.url,
        organisation={"id": "centro-fhir-org", "name": "Centro FHIR (invented)"},
        services=["medical", "legal"],
        endpoint={"url": partner_server.url, "secrets": [SECRET], "format": "fhir-r4"},
    )
    receipt = await submit(
        http, api_key, notes=NOTES, subject__name=NAME, consent__share_identifying=True
    )
    referrals = {r["service"]: r for r in receipt["decision"]["referrals"]}
    assert {"medical", "legal"} <= set(referrals)
    await _drain(worker)

    sent = await deliveries(app)
    assert sent
    assert {d.status for d in sent} == {"delivered"}
    by_referral = {}
    for received in partner_server.received:
        assert received.verified
        Webhook(SECRET).verify(received.body, received.headers)
        assert received.headers["content-type"].startswith("application/fhir+json")
        assert NOTES.encode() not in received.body
        document = validate(received.body)
        task = one(document, "Task")
        assert task["status"] == "requested"
        assert task["owner"]["identifier"]["value"] == "centro-fhir-org"
        by_referral[task["identifier"][0]["value"].removeprefix("urn:uuid:")] = document
    assert set(by_referral) == {str(d.referral_id) for d in sent}
    assert len(partner_server.received) == len(sent)

    legal = by_referral[referrals["legal"]["id"]]
    codes = {code for code, _ in inputs(one(legal, "Task"))}
    assert not any(c.startswith(("screening.health.", "screening.mental_health.")) for c in codes)
    medical = by_referral[referrals["medical"]["id"]]
    request = one(medical, "ServiceRequest")
    assert request["category"][0]["coding"][0]["code"] == "medical"
    # The adult consented to share identifying data: the name travels, in the Patient.
    assert one(medical, "Patient")["name"] == [{"text": NAME}]

    clinic = bearer(await api_key("clinic", "Caravana de la Vida"))
    withdrawn = await http.post(f"/v1/screenings/{receipt['id']}/consent/withdraw", headers=clinic)
    assert withdrawn.status_code == 200, withdrawn.text
    revoked = set(withdrawn.json()["revoked"])
    assert revoked
    before = len(partner_server.received)
    await _drain(worker)
    notices = partner_server.received[before:]
    notified = revoked & set(by_referral)  # held referrals never reached a partner
    assert notified
    assert len(notices) == len(notified)
    for received in notices:
        assert received.verified
        document = validate(received.body)
        task = one(document, "Task")
        assert task["status"] == "cancelled"
        assert task["identifier"][0]["value"].removeprefix("urn:uuid:") in notified
        assert NAME not in json.dumps(document)


async def test_a_thin_fhir_partner_gets_a_link_then_fetches_a_fhir_bundle(
    app: FastAPI,
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    partner_server: PartnerServer,
    worker: DeliveryWorker,
) -> None:
    await add_partner(
        http,
        api_key,
        "thin-fhir",
        partner_server.url,
        services=["legal"],
        endpoint={
            "url": partner_server.url,
            "secrets": [SECRET],
            "format": "fhir-r4",
            "thin": True,
        },
    )
    receipt = await submit(
        http, api_key, notes=NOTES, subject__name=NAME, consent__share_identifying=True
    )
    await _drain(worker)
    [received] = partner_server.received
    assert received.verified
    assert NAME.encode() not in received.body
    webhook = validate(received.body)
    assert one(webhook, "Patient") == {"resourceType": "Patient"}
    links = dict(inputs(one(webhook, "Task")))
    [legal] = [r for r in receipt["decision"]["referrals"] if r["service"] == "legal"]
    assert links["referral.details_url"].endswith(f"/v1/referrals/{legal['id']}/details")

    own = bearer(await api_key("partner", "thin-fhir"))  # the organisation's id
    fetched = await http.get(f"/v1/referrals/{legal['id']}/details", headers=own)
    assert fetched.status_code == 200, fetched.text
    assert fetched.headers["content-type"] == "application/fhir+json; fhirVersion=4.0"
    details = validate(fetched.content)
    assert details["meta"]["tag"][0]["code"] == "referral.details"
    assert one(details, "Patient")["name"] == [{"text": NAME}]
    assert NOTES not in fetched.text
    codes = {code for code, _ in inputs(one(details, "Task"))}
    assert "screening.legal.migration_status" in codes
    assert not any(c.startswith(("screening.health.", "screening.mental_health.")) for c in codes)
