from __future__ import annotations

import uuid
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Body, Request, Response
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.deps import ClinicDep, SessionDep, SettingsDep
from app.errors import PayloadTooLarge, RutaError, ValidationFailed
from app.i18n import negotiate
from app.models import Screening
from app.models.base import utcnow
from app.openapi import example, ok, problem, responses
from app.partners.cache import cached_directory
from app.partners.service import directory_partners
from app.problems import validation_errors
from app.referrals.views import decision_view
from app.schemas import examples
from app.schemas.examples import SCREENING_EXAMPLE
from app.schemas.outcome import (
    BatchIn,
    BatchItemResult,
    BatchResult,
    DecisionView,
    MinimalReceipt,
    ScreeningDetail,
    ScreeningReceipt,
    receipt_json,
)
from app.schemas.screening import ScreeningIn
from app.services import intake
from app.services.receipts import (
    RETURN_MINIMAL,
    batch_json,
    minimal_json,
    minimal_of,
    minimal_receipt,
    prefers_minimal,
    screening_href,
)

log = structlog.get_logger("ruta.intake")

router = APIRouter(prefix="/v1/screenings", tags=["screenings"], responses=responses(404, 409))

_screening_adapter: TypeAdapter[ScreeningIn] = TypeAdapter(ScreeningIn)


async def receipt(
    session: AsyncSession,
    screening: Screening,
    *,
    replayed: bool,
    decision: dict[str, Any] | None = None,
) -> ScreeningReceipt:
    """The receipt; ``decision`` when the caller just built it, else read back."""
    if decision is None:
        decision = await decision_view(session, screening.id)
    return ScreeningReceipt(
        id=screening.id,
        organisation=screening.organisation,
        status="decided" if decision is not None else "received",
        schema_version=screening.schema_version,
        screened_at=screening.screened_at,
        received_at=screening.received_at,
        replayed=replayed,
        decision=DecisionView.model_validate(decision) if decision is not None else None,
    )


#: The POST answers differ by ``Prefer`` and, when minimal, by ``Accept-Language``.
_VARY = "Prefer, Accept-Language"

MINIMAL_RECEIPT_EXAMPLE = minimal_receipt(
    uuid.UUID(examples.RECEIPT["id"]),
    replayed=False,
    decision=examples.RECEIPT["decision"],
    locale="es",
).model_dump(mode="json", exclude_defaults=True)


def _receipts(description: str, full: dict[str, Any]) -> dict[str, Any]:
    """A POST answer: the full receipt, or the minimal one on ``Prefer: return=minimal``."""
    minimal = {**MINIMAL_RECEIPT_EXAMPLE, "replayed": full["replayed"]}
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/ScreeningReceipt"},
                        {"$ref": "#/components/schemas/MinimalReceipt"},
                    ]
                },
                "examples": {
                    "full": {"summary": "The full receipt (default)", "value": example(full)},
                    "minimal": {
                        "summary": "Prefer: return=minimal, Accept-Language: es",
                        "value": example(minimal),
                    },
                },
            }
        },
    }


@router.post(
    "",
    status_code=201,
    # Documented in `responses` (a oneOf of the two receipts); the route answers bytes.
    response_model=None,
    summary="Submit a screening",
    description=(
        "For clinic apps. Validates the screening (unknown fields are rejected at any depth; "
        "timestamps need an offset), stores it with its personal fields encrypted, runs the "
        "active rule set, picks a partner for each referral and queues the signed deliveries, "
        "all in one transaction. The answer (201, `Location: /v1/screenings/{id}`) carries the "
        "decision: one referral per service with urgency, legal basis, reasons in Spanish and "
        "English, the chosen partner and its response deadline. "
        "Idempotent on the screening's `id`: the same id with the same body returns the "
        "original result (200, `replayed: true`) and stores nothing new, so retry freely on a "
        "bad connection; the same id with a different body returns 409. A 422 lists each "
        "invalid field's path and never echoes the value sent.\n\n"
        "**On a slow link, ask for less.** Send `Prefer: return=minimal` (RFC 7240) and the "
        "answer is a `MinimalReceipt` (about 2.5 KB, 1 KB compressed, instead of about 19 KB "
        "and 3.7 KB): the screening id, "
        "`href` (the full receipt: `GET /v1/screenings/{id}`), and per referral its service, "
        "recipient, urgency, legal basis, status, partner and response deadline, with the "
        "reasons in one language (`Accept-Language`, default English; `language` and "
        "`Content-Language` say which), without the rules trace; a field at its default "
        "(`null`, `false`) is left out. It answers with `Preference-Applied: "
        "return=minimal`; every answer says "
        "`Vary: Prefer, Accept-Language`. Bodies may be sent gzipped (`Content-Encoding: "
        "gzip`; the size limit applies to the decoded body) and answers come compressed when "
        "`Accept-Encoding` allows it (zstd, br or gzip)."
    ),
    responses={
        201: _receipts("Stored and decided: the decision and its referrals", examples.RECEIPT),
        200: _receipts(
            "A replay of an earlier identical POST", {**examples.RECEIPT, "replayed": True}
        ),
        403: problem("Not a clinic key (only clinics submit screenings)"),
        409: problem("Same id, different body"),
        400: problem("The body says Content-Encoding: gzip but is not valid gzip"),
        413: problem("The body (decoded, if gzipped) is larger than RUTA_MAX_BODY_BYTES"),
        415: problem("A Content-Encoding other than gzip, or JSON not in UTF-8"),
    },
)
async def submit(
    screening: Annotated[ScreeningIn, Body(openapi_examples=SCREENING_EXAMPLE)],
    principal: ClinicDep,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
) -> Response:
    result = await intake.submit_screening(
        session,
        settings,
        principal,
        screening,
        rule_set=request.app.state.rule_set,
        now=utcnow(),
        request_id=request.state.request_id,
        committer=request.app.state.intake,
    )
    screening_row = result.screening
    headers = {"Location": screening_href(screening_row.id), "Vary": _VARY}
    if prefers_minimal(request.headers.get("prefer")):
        locale = negotiate(request.headers.get("accept-language"))
        headers |= {"Preference-Applied": RETURN_MINIMAL, "Content-Language": locale}
        content = minimal_json(await minimal_of(session, result, locale))
    elif result.decision is not None:
        # Just decided: written straight from what intake holds (see receipt_json).
        content = receipt_json(
            id=screening_row.id,
            organisation=screening_row.organisation,
            status="decided",
            schema_version=screening_row.schema_version,
            screened_at=screening_row.screened_at,
            received_at=screening_row.received_at,
            replayed=not result.created,
            decision=result.decision,
        )
    else:
        answer = await receipt(session, screening_row, replayed=not result.created)
        # Serialised once, here: returning the model would make FastAPI dump it, validate
        # the dump against the response model it was just built from, and dump it again.
        content = answer.model_dump_json().encode()
    return Response(
        content=content,
        status_code=201 if result.created else 200,
        media_type="application/json",
        headers=headers,
    )


@router.post(
    "/batch",
    response_model=BatchResult,
    summary="Submit screenings collected offline",
    description=(
        "For clinic apps that collected screenings offline. Up to `RUTA_MAX_BATCH_ITEMS` "
        "(default 100) screenings, each with its original `screened_at`. Each item is "
        "validated and stored on its own, exactly as `POST /v1/screenings` would: a bad item "
        "is reported in `results` (with its `http_status` and problem) and does not reject "
        "the good ones, and a replayed item answers `replayed`. The valid items are stored "
        "in one transaction; if the database refuses one of them, it is reported as `error` "
        "(500) and the others are still stored. The answer is 200 whenever the batch itself "
        "is well-formed; check `failed` and each result. With `Prefer: return=minimal` every "
        "item's receipt is a `MinimalReceipt` (reasons in the `Accept-Language` language), "
        "and the answer says `Preference-Applied: return=minimal`: a batch of 100 answers in "
        "about 270 KB, about 17 KB gzipped, instead of about 2 MB and 39 KB. The body may be "
        "sent "
        "gzipped (`Content-Encoding: gzip`)."
    ),
    responses={
        **ok(examples.BATCH_RESULT, "One result per item, in order"),
        400: problem("The body says Content-Encoding: gzip but is not valid gzip"),
        413: problem(
            "More than RUTA_MAX_BATCH_ITEMS screenings, or the body (decoded, if gzipped) is "
            "larger than RUTA_MAX_BODY_BYTES"
        ),
        415: problem("A Content-Encoding other than gzip, or JSON not in UTF-8"),
        422: problem("The batch is empty or not an object with `screenings`"),
    },
)
async def submit_batch(
    batch: BatchIn,
    principal: ClinicDep,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
) -> Response:
    locale = negotiate(request.headers.get("accept-language"))
    minimal = prefers_minimal(request.headers.get("prefer"))
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
    now = utcnow()
    results: dict[int, BatchItemResult] = {}
    plans: dict[int, intake.Plan] = {}
    partners = await cached_directory(
        session, directory_partners, ttl=settings.directory_cache_seconds
    )
    for index, raw in enumerate(batch.screenings):
        item_id = _shown_id(raw.get("id"))
        try:
            screening = _screening_adapter.validate_python(raw)
        except ValidationError as exc:
            problem = ValidationFailed(validation_errors(exc.errors(), strip_body=False))
            results[index] = _failed(index, item_id, "invalid", problem, locale)
            continue
        try:
            plans[index] = intake.prepare(
                settings,
                principal,
                screening,
                rule_set=request.app.state.rule_set,
                partners=partners,
                now=now,
                batch=True,
                request_id=request.state.request_id,
            )
        except RutaError as exc:
            results[index] = _failed(index, str(screening.id), "invalid", exc, locale)
    # The valid items are written as one group; if that fails, each alone, so a bad item
    # cannot reject the good ones.
    written: dict[int, intake.IntakeResult | None] = {}
    try:
        async with session.begin_nested():
            written = dict(
                zip(plans, await intake.write(session, settings, list(plans.values())), strict=True)
            )
    except Exception as group_error:
        log.warning("intake_batch_group_failed", error=type(group_error).__name__)
        for index, plan in plans.items():
            try:
                async with session.begin_nested():
                    [written[index]] = await intake.write(session, settings, [plan])
            except RutaError as exc:
                results[index] = _failed(index, str(plan.id), "invalid", exc, locale)
            except Exception as exc:  # this item alone fails in the database
                log.error("intake_batch_item_failed", error=type(exc).__name__)
                internal = RutaError("An internal error occurred.")
                results[index] = _failed(index, str(plan.id), "error", internal, locale)
    for index, plan in plans.items():
        if index in results:
            continue
        result = written[index]
        if result is None:  # the id was already stored: a replay, or a conflict
            try:
                async with session.begin_nested():
                    result = await intake.replay(session, plan)
            except RutaError as exc:
                status = {409: "conflict", 403: "forbidden"}.get(exc.status, "invalid")
                results[index] = _failed(index, str(plan.id), status, exc, locale)
                continue
        results[index] = BatchItemResult(
            index=index,
            id=str(plan.id),
            status="created" if result.created else "replayed",
            http_status=201 if result.created else 200,
            receipt=await _item_receipt(session, result, minimal=minimal, locale=locale),
        )
    ordered = [results[index] for index in sorted(results)]
    created = sum(r.status == "created" for r in ordered)
    replayed = sum(r.status == "replayed" for r in ordered)
    answer = BatchResult(
        created=created,
        replayed=replayed,
        failed=len(ordered) - created - replayed,
        results=ordered,
    )
    headers = {"Vary": _VARY}
    if minimal:
        headers |= {"Preference-Applied": RETURN_MINIMAL, "Content-Language": locale}
    return Response(content=batch_json(answer), media_type="application/json", headers=headers)


async def _item_receipt(
    session: AsyncSession, result: intake.IntakeResult, *, minimal: bool, locale: str
) -> ScreeningReceipt | MinimalReceipt:
    """A batch item's receipt: minimal when the batch asked for it, else full."""
    if minimal:
        return await minimal_of(session, result, locale)
    return await receipt(
        session, result.screening, replayed=not result.created, decision=result.decision
    )


def _shown_id(value: Any) -> str | None:
    """An invalid item's ``id`` as its result may repeat it: only a UUID (any other text may
    be personal data). The item's ``index`` identifies it either way."""
    try:
        return str(uuid.UUID(value)) if isinstance(value, str) else None
    except ValueError:
        return None


def _failed(
    index: int, item_id: str | None, status: Any, error: RutaError, locale: str
) -> BatchItemResult:
    return BatchItemResult(
        index=index,
        id=item_id,
        status=status,
        http_status=error.status,
        problem=error.problem(locale=locale),
    )


@router.get(
    "/{screening_id:uuid}",
    response_model=ScreeningDetail,
    summary="A screening and its outcome",
    description="For clinic apps: the stored screening (without its personal fields) and its "
    "decision with each referral's current status. Clinics read their own organisation's "
    "screenings only; another organisation's id answers 404. `personal_fields` lists which "
    "personal fields are held (paths, not values); read them with "
    "`GET /v1/screenings/{id}/personal?purpose=…`, which is audited.",
    responses={
        **ok(examples.SCREENING_DETAIL, "The screening and its decision"),
        404: problem("No such screening for this organisation"),
    },
)
async def get_screening(
    screening_id: uuid.UUID, principal: ClinicDep, session: SessionDep
) -> ScreeningDetail:
    screening = await intake.get_screening_for(session, principal, screening_id)
    base = await receipt(session, screening, replayed=False)
    return ScreeningDetail(
        **base.model_dump(),
        screening=screening.data,
        personal_fields=list(screening.personal_fields),
    )
