from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import text

from app.errors import ServiceUnavailable
from app.migrations import head_revision
from app.openapi import problem

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: the database answers and its schema is at the migrations' head",
    responses={503: problem("Not ready: database unreachable or schema not at head")},
)
async def readyz(request: Request) -> dict[str, Any]:
    try:
        async with request.app.state.engine.connect() as conn:
            current = (
                await conn.execute(text("SELECT version_num FROM alembic_version"))
            ).scalar_one_or_none()
    except Exception:
        raise ServiceUnavailable("The database is not reachable or not migrated.") from None
    head = head_revision()
    if current != head:
        raise ServiceUnavailable(
            "The database schema is not at the migrations' head.",
            database_revision=current,
            head_revision=head,
        )
    return {"status": "ready", "database_revision": current}
