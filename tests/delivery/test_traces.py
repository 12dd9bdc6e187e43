"""A delivery leaves a trace in the logs: each failed attempt, each retry with its next due
time, the dead letter, the circuit opening and closing, the replay and the delivery. One
JSON line each, with ids and codes, once its transaction committed; the screening holds a
canary in every personal field, and none reaches the output."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.delivery import policy
from app.delivery.worker import DeliveryWorker
from app.observability import configure_logging
from tests.conftest import KeyFactory, bearer, log_lines, log_records
from tests.delivery.conftest import Clock, add_partner, deliveries, past_the_probe, until_dead
from tests.delivery.partner_server import PartnerServer
from tests.factories import adult_consenting
from tests.test_canary import assert_clean, canary_fields


async def post_canary(http: httpx.AsyncClient, api_key: KeyFactory) -> dict[str, Any]:
    clinic = await api_key("clinic", "Caravana de la Vida")
    body = adult_consenting(**canary_fields())
    response = await http.post("/v1/screenings", json=body, headers=bearer(clinic))
    assert response.status_code == 201, response.text
    receipt: dict[str, Any] = response.json()
    return receipt


async def test_a_delivery_that_fails_leaves_a_trace_without_personal_data(
    app: FastAPI,
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    partner_server: PartnerServer,
    worker: DeliveryWorker,
    clock: Clock,
    capfd: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO")
    await add_partner(http, api_key, "trace-partner", partner_server.url, services=["medical"])
    receipt = await post_canary(http, api_key)
    [medical] = [r for r in receipt["decision"]["referrals"] if r["service"] == "medical"]
    partner_server.default = 500
    await until_dead(app, worker, clock, "trace-partner")
    [delivery] = await deliveries(app)
    assert delivery.status == "dead"
    admin = await api_key("admin")
    replayed = await http.post(f"/v1/deliveries/{delivery.id}/replay", headers=bearer(admin))
    assert replayed.status_code == 200, replayed.text
    partner_server.default = 200
    await past_the_probe(app, clock, "trace-partner")
    await worker.run_once()
    assert (await deliveries(app))[0].status == "delivered"

    output = capfd.readouterr()
    found = log_records(output.err)
    ids = {"delivery_id": str(delivery.id), "partner_id": "trace-partner"}
    failed = log_lines(found, "delivery_attempt_failed", **ids)
    assert len(failed) == policy.max_attempts()
    assert failed[0]["attempt"] == 1
    assert failed[0]["http_status"] == 500
    assert failed[0]["reason"] == "http_500"
    assert failed[0]["outcome"] == "retry"
    assert failed[0]["referral_id"] == medical["id"]
    assert failed[0]["level"] == "warning"
    assert failed[-1]["outcome"] == "dead"
    retries = log_lines(found, "delivery_retry_scheduled", **ids)
    assert len(retries) == policy.max_attempts() - 1
    assert [r["attempt"] for r in retries] == list(range(1, policy.max_attempts()))
    assert all(datetime.fromisoformat(r["next_attempt_at"]) for r in retries)
    assert retries[0]["delay_seconds"] > 0
    [dead] = log_lines(found, "delivery_dead_letter", **ids)
    assert dead["attempts"] == policy.max_attempts()
    assert dead["level"] == "error"
    assert dead["referral_id"] == medical["id"]
    [opened] = log_lines(found, "circuit_opened", partner_id="trace-partner")
    assert opened["consecutive_failures"] >= 5
    [replay] = log_lines(found, "dead_letter_replayed", **ids)
    assert (replay["actor"], replay["actor_role"], replay["replays"]) == ("client", "admin", 1)
    assert log_lines(found, "circuit_closed", partner_id="trace-partner")
    assert log_lines(found, "delivery_delivered", **ids)
    assert_clean(output.out + output.err, "the delivery's log lines")
