"""GET /v1/rules and POST /v1/rules/evaluate (dry run, stores nothing)."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from app.models import Screening
from app.routers import rules as rules_router
from app.rules import DEFAULT_RULES_PATH, load_rule_set
from tests.conftest import KeyFactory, bearer
from tests.factories import screening
from tests.rules.helpers import one_rule


@pytest.fixture
def rules_app(app: FastAPI) -> FastAPI:
    if not any(getattr(r, "path", "").startswith("/v1/rules") for r in app.router.routes):
        app.include_router(rules_router.router)
    app.state.rule_set = load_rule_set(DEFAULT_RULES_PATH)
    return app


@pytest.mark.parametrize("role", ["admin", "auditor", "clinic"])
async def test_get_active_rule_set(
    rules_app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory, role: str
) -> None:
    key = await api_key(role, "Caravana de la Vida" if role == "clinic" else None)
    response = await http.get("/v1/rules", headers=bearer(key))
    assert response.status_code == 200
    body = response.json()
    assert body["version"] == rules_app.state.rule_set.version
    assert body["sha256"] == rules_app.state.rule_set.sha256
    assert body["rules"] == len(rules_app.state.rule_set.rules)


async def test_partner_may_not_read_rules(
    rules_app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    key = await api_key("partner", "Hospital Santa Rosa")
    assert (await http.get("/v1/rules", headers=bearer(key))).status_code == 403
    assert (await http.get("/v1/rules")).status_code == 401


async def test_no_rule_set_loaded_is_503(
    rules_app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    rules_app.state.rule_set = None
    key = await api_key("admin")
    response = await http.get("/v1/rules", headers=bearer(key))
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"


async def test_evaluate_against_active_set_stores_nothing(
    rules_app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    key = await api_key("admin")
    body = screening(subject__name="CANARY-NAME", notes="CANARY-NOTES")
    response = await http.post("/v1/rules/evaluate", json={"screening": body}, headers=bearer(key))
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["rule_set"]["sha256"] == rules_app.state.rule_set.sha256
    decision = data["decision"]
    services = {r["service"]: r for r in decision["referrals"]}
    assert services["protection"]["legal_basis"] == "child_protection_duty"
    assert decision["trace"]["rule_set_hash"] == rules_app.state.rule_set.sha256
    assert "minor-protection" in {f["rule_id"] for f in decision["trace"]["fired"]}
    assert "CANARY" not in response.text
    async with rules_app.state.sessionmaker() as session:
        count = await session.scalar(select(func.count()).select_from(Screening))
    assert count == 0


async def test_evaluate_against_a_submitted_rule_file(
    rules_app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    key = await api_key("admin")
    text = one_rule('{field: health.sti_symptoms, op: "==", value: true}')
    response = await http.post(
        "/v1/rules/evaluate", json={"screening": screening(), "rules": text}, headers=bearer(key)
    )
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["rule_set"]["version"] == "t1"
    assert [r["service"] for r in data["decision"]["referrals"]] == ["medical"]


async def test_invalid_submitted_rule_file_is_422_with_paths(
    rules_app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    key = await api_key("admin")
    text = one_rule('{field: subject.agee, op: "<", value: 18, if_missing: false}')
    response = await http.post(
        "/v1/rules/evaluate", json={"screening": screening(), "rules": text}, headers=bearer(key)
    )
    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert error["path"] == "rules.r1.when.field"
    assert "did you mean 'subject.age'" in error["message"]
    assert error["code"] == "rule_file_invalid"


@pytest.mark.parametrize(
    ("when", "reason"),
    [
        ("[" * 50_000 + "]" * 50_000, "nest more than"),
        ("{field: subject.age, op: '<', value: " + "9" * 100_000 + "}", "whole number"),
    ],
)
async def test_a_rule_file_too_deep_or_with_a_huge_number_is_a_422_with_the_reason(
    rules_app: FastAPI, api_key: KeyFactory, when: str, reason: str
) -> None:
    key = await api_key("admin")
    transport = httpx.ASGITransport(app=rules_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://ruta.test") as http:
        response = await http.post(
            "/v1/rules/evaluate",
            json={"screening": screening(), "rules": one_rule(when)},
            headers=bearer(key),
        )
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert error["path"] == "rules"
    assert reason in error["message"]
    assert "(line " in error["message"]


async def test_a_problem_inside_a_list_of_conditions_has_a_field_path(
    rules_app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    key = await api_key("admin")
    when = '{any: [{field: subject.age, op: "<", value: 18, if_missing: false}, {field: x.y}]}'
    text = one_rule(when, rule_id="minor-protection")
    response = await http.post(
        "/v1/rules/evaluate", json={"screening": screening(), "rules": text}, headers=bearer(key)
    )
    assert response.status_code == 422
    paths = [e["path"] for e in response.json()["errors"]]
    assert "rules.minor-protection.when.any.1.field" in paths, paths


async def test_invalid_screening_is_422_without_echo(
    rules_app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    key = await api_key("admin")
    body = screening(subject__age="CANARY")
    response = await http.post("/v1/rules/evaluate", json={"screening": body}, headers=bearer(key))
    assert response.status_code == 422
    assert "CANARY" not in response.text


@pytest.mark.parametrize("role", ["auditor", "clinic"])
async def test_evaluate_is_admin_only(
    rules_app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory, role: str
) -> None:
    key = await api_key(role, "Caravana de la Vida" if role == "clinic" else None)
    response = await http.post(
        "/v1/rules/evaluate", json={"screening": screening()}, headers=bearer(key)
    )
    assert response.status_code == 403
