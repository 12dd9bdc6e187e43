"""Ruta's app with intake's own work replaced by one canned result (for bench/floor.py).

Everything around intake stays: uvicorn, the middleware (request id, metrics, body cap, NUL
check), FastAPI's validation of the screening, API-key authentication with its cache and
rate limit, the request's session, and the receipt written from the result. Only
``intake.submit_screening`` changes: the first screening is taken in for real, and every
later request gets that first result back. What this serves is the most any intake could
serve behind this request path.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from app.main import create_app as create_ruta_app
from app.services import intake


def create_app() -> FastAPI:
    real = intake.submit_screening
    canned: list[intake.IntakeResult] = []

    async def submit_screening(*args: Any, **kwargs: Any) -> intake.IntakeResult:
        if not canned:
            canned.append(await real(*args, **kwargs))
        return canned[0]

    intake.submit_screening = submit_screening
    return create_ruta_app()
