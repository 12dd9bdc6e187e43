"""The framework's limit: a bare FastAPI endpoint that validates the same screening payload
with the same pydantic model and returns a fixed body. No database, no auth, no rules."""

from __future__ import annotations

from fastapi import FastAPI

from app.schemas.screening import ScreeningIn

app = FastAPI()

FIXED = {"status": "received"}


@app.post("/v1/screenings", status_code=201)
async def submit(screening: ScreeningIn) -> dict[str, str]:
    return FIXED
