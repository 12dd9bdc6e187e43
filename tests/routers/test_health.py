from __future__ import annotations

import httpx
from fastapi import FastAPI
from sqlalchemy import text


async def test_healthz(http: httpx.AsyncClient) -> None:
    response = await http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_at_head(http: httpx.AsyncClient) -> None:
    response = await http.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "ready"


async def test_readyz_fails_when_schema_behind_head(http: httpx.AsyncClient, app: FastAPI) -> None:
    async with app.state.engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = 'old'"))
    response = await http.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
