"""Who may read `GET /metrics`: the token's holder, or, without a token, anyone outside
production and nobody in production."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from app.settings import Environment, Settings
from tests.conftest import bearer

TOKEN = "metrics-token-0123456789abcdef-0123456789"


def use(app: FastAPI, **changes: object) -> None:
    settings: Settings = app.state.settings
    app.state.settings = settings.model_copy(update=changes)


async def test_open_outside_production_without_a_token(http: httpx.AsyncClient) -> None:
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert "ruta_audit_chain_length" in response.text


async def test_not_served_in_production_without_a_token(
    app: FastAPI, http: httpx.AsyncClient
) -> None:
    use(app, env=Environment.production)
    response = await http.get("/metrics", headers=bearer(TOKEN))
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert "RUTA_METRICS_TOKEN" in response.json()["detail"]
    assert "ruta_" not in response.text.replace("RUTA_METRICS_TOKEN", "")


@pytest.mark.parametrize("env", [Environment.production, Environment.test])
async def test_with_a_token_only_its_holder_reads_them(
    app: FastAPI, http: httpx.AsyncClient, env: Environment
) -> None:
    use(app, env=env, metrics_token=SecretStr(TOKEN))
    for headers in ({}, bearer("wrong"), bearer(TOKEN + "x"), {"Authorization": TOKEN}):
        refused = await http.get("/metrics", headers=headers)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "ruta_audit_chain_length" not in refused.text
    allowed = await http.get("/metrics", headers=bearer(TOKEN))
    assert allowed.status_code == 200
    assert "ruta_audit_chain_length" in allowed.text


def test_the_token_is_long_and_an_empty_one_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUTA_METRICS_TOKEN", "")
    assert Settings(env=Environment.test).metrics_token is None
    monkeypatch.setenv("RUTA_METRICS_TOKEN", "short")
    with pytest.raises(ValueError, match="at least 32"):
        Settings(env=Environment.test)
