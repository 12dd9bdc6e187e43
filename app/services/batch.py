"""``POST /v1/screenings/batch``: screenings collected offline, each stored on its own terms.

Each item is validated and planned as ``POST /v1/screenings`` would; the valid items are
written in one transaction (a savepoint), and if the database refuses that group, each item
alone, so that a bad item cannot reject the good ones. An item whose id is already stored is
a replay (or a conflict). Every item gets a result, in order.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import structlog
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Principal
from app.errors import PayloadTooLarge, RutaError, ValidationFailed
from app.partners.cache import cached_directory
from app.partners.service import directory_partners
from app.problems import validation_errors
from app.rules.engine import RuleSet
from app.schemas.outcome import BatchIn, BatchItemResult, BatchResult
from app.schemas.screening import ScreeningIn
from app.services import intake
from app.services.receipts import item_receipt
from app.settings import Settings

log = structlog.get_logger("ruta.intake")

_screening_adapter: TypeAdapter[ScreeningIn] = TypeAdapter(ScreeningIn)

ItemStatus = Literal["created", "replayed", "conflict", "invalid", "forbidden", "error"]


@dataclass(frozen=True)
class BatchRequest:
    """Who posts the batch, under which rule set, and how its receipts are to be written."""

    principal: Principal
    rule_set: RuleSet
    request_id: str | None
    now: datetime
    minimal: bool
    locale: str


async def submit_batch(
    session: AsyncSession, settings: Settings, batch: BatchIn, request: BatchRequest
) -> BatchResult:
    """Store what can be stored of ``batch``; one result per item, in order."""
    _check_size(batch, settings)
    results: dict[int, BatchItemResult] = {}
    plans = await _plans(session, settings, batch, request, results)
    written = await _write(session, settings, plans, request.locale, results)
    for index, plan in plans.items():
        if index not in results:
            results[index] = await _stored(session, index, plan, written[index], request)
    ordered = [results[index] for index in sorted(results)]
    created = sum(r.status == "created" for r in ordered)
    replayed = sum(r.status == "replayed" for r in ordered)
    return BatchResult(
        created=created,
        replayed=replayed,
        failed=len(ordered) - created - replayed,
        results=ordered,
    )


def _check_size(batch: BatchIn, settings: Settings) -> None:
    if len(batch.screenings) > settings.max_batch_items:
        raise PayloadTooLarge(
            "A batch holds at most {max_items} screenings.",
            params={"max_items": settings.max_batch_items},
            max_items=settings.max_batch_items,
        )
    if not batch.screenings:
        raise ValidationFailed(
            [
                {
                    "path": "screenings",
                    "pointer": "#/screenings",
                    "message": "empty batch",
                    "code": "too_short",
                }
            ]
        )


async def _plans(
    session: AsyncSession,
    settings: Settings,
    batch: BatchIn,
    request: BatchRequest,
    results: dict[int, BatchItemResult],
) -> dict[int, intake.Plan]:
    """Each valid item's plan by index; an invalid item's result goes into ``results``."""
    plans: dict[int, intake.Plan] = {}
    partners = await cached_directory(
        session, directory_partners, ttl=settings.directory_cache_seconds
    )
    for index, raw in enumerate(batch.screenings):
        try:
            screening = _screening_adapter.validate_python(raw)
        except ValidationError as exc:
            problem = ValidationFailed(validation_errors(exc.errors(), strip_body=False))
            item_id = shown_id(raw.get("id"))
            results[index] = _failure(index, item_id, "invalid", problem, request.locale)
            continue
        try:
            plans[index] = intake.prepare(
                settings,
                request.principal,
                screening,
                rule_set=request.rule_set,
                partners=partners,
                now=request.now,
                batch=True,
                request_id=request.request_id,
            )
        except RutaError as exc:
            results[index] = _failure(index, str(screening.id), "invalid", exc, request.locale)
    return plans


async def _write(
    session: AsyncSession,
    settings: Settings,
    plans: dict[int, intake.Plan],
    locale: str,
    results: dict[int, BatchItemResult],
) -> dict[int, intake.IntakeResult | None]:
    """The valid items written as one group; if that fails, each alone. ``None``: the id
    was already stored."""
    try:
        async with session.begin_nested():
            stored = await intake.write(session, settings, list(plans.values()))
            return dict(zip(plans, stored, strict=True))
    except Exception as group_error:
        log.warning("intake_batch_group_failed", error=type(group_error).__name__)
    written: dict[int, intake.IntakeResult | None] = {}
    for index, plan in plans.items():
        try:
            async with session.begin_nested():
                [written[index]] = await intake.write(session, settings, [plan])
        except RutaError as exc:
            results[index] = _failure(index, str(plan.id), "invalid", exc, locale)
        except Exception as exc:  # this item alone fails in the database
            log.error("intake_batch_item_failed", error=type(exc).__name__)
            internal = RutaError("An internal error occurred.")
            results[index] = _failure(index, str(plan.id), "error", internal, locale)
    return written


async def _stored(
    session: AsyncSession,
    index: int,
    plan: intake.Plan,
    result: intake.IntakeResult | None,
    request: BatchRequest,
) -> BatchItemResult:
    """The result of an item that was written, or whose id was already stored (a replay, or
    a conflict)."""
    if result is None:
        try:
            async with session.begin_nested():
                result = await intake.replay(session, plan)
        except RutaError as exc:
            status: ItemStatus = (
                "conflict" if exc.status == 409 else "forbidden" if exc.status == 403 else "invalid"
            )
            return _failure(index, str(plan.id), status, exc, request.locale)
    return BatchItemResult(
        index=index,
        id=str(plan.id),
        status="created" if result.created else "replayed",
        http_status=201 if result.created else 200,
        receipt=await item_receipt(session, result, minimal=request.minimal, locale=request.locale),
    )


def shown_id(value: Any) -> str | None:
    """An invalid item's ``id`` as its result may repeat it: only a UUID (any other text may
    be personal data). The item's ``index`` identifies it either way."""
    try:
        return str(uuid.UUID(value)) if isinstance(value, str) else None
    except ValueError:
        return None


def _failure(
    index: int, item_id: str | None, status: ItemStatus, error: RutaError, locale: str
) -> BatchItemResult:
    return BatchItemResult(
        index=index,
        id=item_id,
        status=status,
        http_status=error.status,
        problem=error.problem(locale=locale),
    )
