from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy import text

from app.errors import ServiceUnavailable
from app.migrations import audit_protection_problems, head_revision
from app.openapi import ok, problem
from app.schemas import examples
from app.settings import Environment, Settings

router = APIRouter(tags=["health"], responses={500: problem("Internal error")})


class HealthOut(BaseModel):
    status: Literal["ok"]


class ReadyOut(BaseModel):
    status: Literal["ready"]
    database_revision: str | None = Field(
        description="The Alembic revision the database is at (the migrations' head)."
    )


@router.get(
    "/healthz",
    response_model=HealthOut,
    summary="Liveness: the process is up",
    description="No authentication, no database access: answers 200 while the process can "
    "serve HTTP. Use it as the container's liveness probe; use `/readyz` to decide whether "
    "to send traffic.",
    responses=ok(examples.HEALTHY, "The process is up"),
)
async def healthz() -> HealthOut:
    return HealthOut(status="ok")


@router.get(
    "/readyz",
    response_model=ReadyOut,
    summary="Readiness: the database answers and its schema is at the migrations' head",
    description="No authentication. 200 when the database answers and its schema is at the "
    "head of the migrations shipped with this version; 503 (with `database_revision` and "
    "`head_revision` when the schema is behind) until `ruta migrate` has run. In production "
    "on PostgreSQL, also 503 (with the reasons in `database_role`) while the service's "
    "database role could switch the audit trail's protection off: a superuser, the owner "
    "of an audit table or its trigger function, or a role holding UPDATE, DELETE, TRUNCATE "
    "or TRIGGER on one. Use it as the load balancer's readiness probe.",
    responses={
        **ok(examples.READY, "Ready to serve"),
        503: problem(
            "Not ready: database unreachable, schema not at head, or the database role "
            "could alter the audit trail"
        ),
    },
)
async def readyz(request: Request) -> ReadyOut:
    settings: Settings = request.app.state.settings
    try:
        async with request.app.state.engine.connect() as conn:
            current = (
                await conn.execute(text("SELECT version_num FROM alembic_version"))
            ).scalar_one_or_none()
            problems = (
                await audit_protection_problems(conn)
                if settings.env is Environment.production
                else []
            )
    except Exception:
        raise ServiceUnavailable("The database is not reachable or not migrated.") from None
    head = head_revision()
    if current != head:
        raise ServiceUnavailable(
            "The database schema is not at the migrations' head.",
            database_revision=current,
            head_revision=head,
        )
    if problems:
        raise ServiceUnavailable(
            "The service's database role could switch the audit trail's protection off.",
            database_role=problems,
        )
    return ReadyOut(status="ready", database_revision=current)
