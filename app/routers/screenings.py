from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request, Response

from app.deps import ClinicDep, SessionDep, SettingsDep
from app.i18n import DEFAULT_LOCALE, negotiate
from app.models.base import utcnow
from app.openapi import example, ok, problem, responses
from app.schemas import examples
from app.schemas.examples import SCREENING_EXAMPLE
from app.schemas.outcome import (
    BatchIn,
    BatchResult,
    ScreeningDetail,
)
from app.schemas.screening import ScreeningIn
from app.services import batch as batch_service
from app.services import intake
from app.services.receipts import (
    RETURN_MINIMAL,
    answer_json,
    batch_json,
    minimal_receipt,
    prefers_minimal,
    screening_detail,
    screening_href,
)

router = APIRouter(prefix="/v1/screenings", tags=["screenings"], responses=responses(404, 409))

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
    headers = {"Location": screening_href(result.screening.id), "Vary": _VARY}
    locale = DEFAULT_LOCALE  # the full receipt has every language
    minimal = prefers_minimal(request.headers.get("prefer"))
    if minimal:
        locale = negotiate(request.headers.get("accept-language"))
        headers |= {"Preference-Applied": RETURN_MINIMAL, "Content-Language": locale}
    content = await answer_json(session, result, minimal=minimal, locale=locale)
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
    answer = await batch_service.submit_batch(
        session,
        settings,
        batch,
        batch_service.BatchRequest(
            principal=principal,
            rule_set=request.app.state.rule_set,
            request_id=request.state.request_id,
            now=utcnow(),
            minimal=minimal,
            locale=locale,
        ),
    )
    headers = {"Vary": _VARY}
    if minimal:
        headers |= {"Preference-Applied": RETURN_MINIMAL, "Content-Language": locale}
    return Response(content=batch_json(answer), media_type="application/json", headers=headers)


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
    return await screening_detail(session, principal, screening_id)
