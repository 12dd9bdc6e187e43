"""The application factory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from app import audit, console, openapi, problems
from app.auth import JwtVerifier
from app.background import BackgroundTasks
from app.compression import RequestDecoding, response_compression
from app.db import create_engine, create_sessionmaker
from app.delivery.worker import DeliveryWorker
from app.middleware import BodySizeLimit, NoStore, RejectNul
from app.models.base import utcnow
from app.observability import RequestContext, configure_logging, log_on_commit
from app.partners.service import load_and_sync
from app.ratelimit import create_rate_limiter
from app.routers import audit as audit_routes
from app.routers import (
    deliveries,
    demo_partners,
    fhir,
    health,
    metrics,
    partners,
    referrals,
    reports,
    rules,
    screenings,
    services,
    subjects,
)
from app.rules import DEFAULT_RULES_PATH, load_rule_set
from app.services.grouping import GroupCommitter
from app.settings import Settings, get_settings, tune_gc

log = structlog.get_logger("ruta")

DESCRIPTION = """
Ruta routes referrals for people identified as possible victims of human trafficking.

A clinic posts a **screening**; declarative rules decide which services the person needs;
Ruta forwards each referral to an eligible partner, closes the loop on the partner's
answer, and records every step in a tamper-evident audit trail.

Errors are [RFC 9457](https://www.rfc-editor.org/rfc/rfc9457) `application/problem+json`;
validation errors list each invalid field's path.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tune_gc(settings)
        engine = create_engine(settings.database_url)
        app.state.engine = engine
        app.state.sessionmaker = create_sessionmaker(engine)
        audit.configure_sessionmaker(app.state.sessionmaker, settings)
        app.state.rate_limiter = create_rate_limiter(
            settings.rate_limit_backend, settings.redis_url
        )
        if not settings.is_sqlite and settings.rate_limit_backend == "memory":
            log.warning(
                "rate_limits_per_process",
                hint="set RUTA_RATE_LIMIT_BACKEND=redis so limits hold across replicas",
            )
        await load_and_sync(app.state.sessionmaker, settings, now=utcnow())
        async with app.state.sessionmaker() as session:
            rule_set = app.state.rule_set
            await audit.record(
                session,
                action=audit.Action.rule_set_loaded,
                actor=audit.system("startup"),
                data={
                    "rule_set_version": rule_set.version,
                    "rule_set_hash": rule_set.sha256,
                    "count": len(rule_set.rules),
                },
            )
            log_on_commit(
                session, log, "info", "rule_set_loaded", rule_set_version=rule_set.version,
                rule_set_hash=rule_set.sha256, rules=len(rule_set.rules),
            )  # fmt: skip
            await session.commit()
        app.state.intake = GroupCommitter(
            app.state.sessionmaker,
            lambda: app.state.settings,
            max_group=settings.intake_group_max,
        )
        background = BackgroundTasks(app.state.sessionmaker, settings)
        background.start()
        worker_stop = asyncio.Event()
        worker_task: asyncio.Task[None] | None = None
        if settings.embedded_worker:
            worker = DeliveryWorker(app.state.sessionmaker, settings)
            app.state.delivery_worker = worker
            worker_task = asyncio.create_task(worker.run(worker_stop), name="ruta-delivery")
        try:
            yield
        finally:
            await app.state.intake.close()
            worker_stop.set()
            if worker_task is not None:
                await worker_task
            await background.stop()
            await app.state.rate_limiter.close()
            await engine.dispose()

    app = FastAPI(
        title="Ruta",
        version="0.1.0",
        summary="Referral routing for possible victims of human trafficking",
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=openapi.operation_id,
        # app.openapi.install serves them from local assets instead of a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    # Loaded and compiled once, before the app exists: a rule file that does not validate
    # stops the start (RuleFileError), and a half-valid rule set is never used.
    app.state.rule_set = load_rule_set(settings.rules_path or DEFAULT_RULES_PATH)
    app.state.jwt_verifier = JwtVerifier(settings) if settings.jwt_enabled else None
    problems.install(app)
    app.include_router(health.router)
    app.include_router(screenings.router)
    app.include_router(subjects.router)
    app.include_router(audit_routes.router)
    app.include_router(rules.router)
    app.include_router(partners.router)
    app.include_router(services.router)
    app.include_router(referrals.router)
    app.include_router(deliveries.router)
    app.include_router(fhir.router)
    app.include_router(reports.router)
    demo_partners.install(app, settings)
    console.install(app)
    app.include_router(metrics.router)
    openapi.install(app)
    app.add_middleware(RejectNul)
    # A gzip body is decoded before anything reads it, with the cap on its decoded size;
    # the size cap outside it holds for the bytes on the wire (app/compression.py).
    app.add_middleware(RequestDecoding, max_bytes=settings.max_body_bytes)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(NoStore)
    app.add_middleware(response_compression)
    # Outermost: every response, including 413s from the size cap, gets a request id.
    app.add_middleware(RequestContext)
    return app
