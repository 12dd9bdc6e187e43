"""No personal data in logs, error bodies, audit events or metrics.

Screenings carrying canary strings in every personal field go through intake, decisions,
matching, delivery to a real partner on loopback, failed validations and denied requests;
then the logs, every response body, the audit table and /metrics are searched."""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from app.delivery.worker import DeliveryWorker
from app.models.audit import AuditEvent
from tests.conftest import KeyFactory, bearer
from tests.delivery.conftest import add_partner
from tests.delivery.partner_server import PartnerServer
from tests.factories import screening

CANARIES = {
    "name": "Canaria Quispe Mamani",
    "phone": "+51 987 654 321",
    "email": "canaria.7781@example.org",
    "address": "Jr. Canario 778, La Pampa",
    "handle": "@canaria7781",
    "code_word": "GUACAMAYO-7781",
    "safe_times": "CANARY-TIMES-7781",
    "notes": "CANARY-NOTE-7781 she is afraid of the camp owner",
}


def _canary_screening() -> dict[str, object]:
    return screening(**canary_fields())


def canary_fields() -> dict[str, object]:
    """Overrides for tests.factories that put a canary in every personal field."""
    return dict(
        subject__name=CANARIES["name"],
        subject__contact={
            "phone": CANARIES["phone"],
            "email": CANARIES["email"],
            "address": CANARIES["address"],
        },
        subject__date_of_birth="2009-07-08",
        safety__safe_contact={
            "channel": "whatsapp",
            "number_or_handle": CANARIES["handle"],
            "safe_times": CANARIES["safe_times"],
            "code_word": CANARIES["code_word"],
        },
        notes=CANARIES["notes"],
    )


def assert_clean(text: str, where: str) -> None:
    lowered = text.lower()
    for label, canary in CANARIES.items():
        if label in ("code_word", "safe_times"):
            continue  # contact instructions may legitimately travel to partners, not here
        assert canary.lower() not in lowered, f"{label} canary found in {where}"
    for label in ("code_word", "safe_times"):
        assert CANARIES[label].lower() not in lowered, f"{label} canary found in {where}"


async def test_canaries_never_reach_logs_errors_audit_or_metrics(
    app: FastAPI,
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    capfd: pytest.CaptureFixture[str],
) -> None:
    server = PartnerServer().start()
    responses: list[str] = []
    try:
        await add_partner(http, api_key, "canary-partner", server.url)
        clinic = await api_key("clinic", "Caravana de la Vida")
        good = _canary_screening()
        for body in (good, good):  # created, then replayed
            r = await http.post("/v1/screenings", json=body, headers=bearer(clinic))
            assert r.status_code in (200, 201)
            responses.append(r.text)
        conflicting = {**good, "notes": CANARIES["notes"] + " changed"}
        responses.append(
            (await http.post("/v1/screenings", json=conflicting, headers=bearer(clinic))).text
        )
        invalid = _canary_screening()
        invalid["subject"]["contact"]["phone"] = CANARIES["name"]  # type: ignore[index]
        invalid["subject"]["nombre"] = CANARIES["name"]  # type: ignore[index]
        invalid["notes"] = CANARIES["notes"] * 200
        responses.append(
            (await http.post("/v1/screenings", json=invalid, headers=bearer(clinic))).text
        )
        responses.append(
            (
                await http.post(
                    "/v1/screenings/batch",
                    json={"screenings": [invalid, _canary_screening()]},
                    headers=bearer(clinic),
                )
            ).text
        )
        responses.append((await http.post("/v1/screenings", json=good)).text)  # 401
        responses.append(
            (
                await http.post(
                    "/v1/screenings", json=good, headers=bearer(await api_key("auditor"))
                )
            ).text
        )
        worker = DeliveryWorker(app.state.sessionmaker, app.state.settings)
        await worker.run_once()
        assert server.received, "nothing was delivered"
        metrics = (await http.get("/metrics")).text
    finally:
        server.stop()

    for index, text in enumerate(responses):
        assert_clean(text, f"response {index}")
    assert_clean(metrics, "/metrics")
    logs = capfd.readouterr()
    assert_clean(logs.out + logs.err, "logs")
    async with app.state.sessionmaker() as session:
        rows = (await session.execute(select(AuditEvent))).scalars().all()
    dump = json.dumps(
        [[r.action, r.actor_id, r.actor_role, r.partner_id, r.request_id, r.data] for r in rows],
        default=str,
    )
    assert "screening.received" in dump
    assert_clean(dump, "the audit table")
