"""OpenAPI pieces shared by every router: the problem+json schema, error responses, success
examples, and the document generator that makes every error response problem+json."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import fastapi_offline
from fastapi import APIRouter, Body, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi.utils import generate_unique_id
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from app import errors
from app.partners import fhir
from app.schemas import examples as ex
from app.schemas import webhooks as wh
from app.schemas.outcome import Timestamp as Timestamp  # routers import it from here
from app.schemas.screening import AwareDatetime

PROBLEM_JSON = "application/problem+json"
FHIR_JSON = "application/fhir+json"

_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})$")


def _iso_only(value: Any) -> Any:
    """Query timestamps must be ISO 8601 date-times with an offset: pydantic would also read
    0.5 as a Unix time, and a bare date or a time without an offset as a naive datetime,
    which cannot be compared with the stored UTC times."""
    if isinstance(value, str) and not _ISO.match(value.strip()):
        raise ValueError(ISO_EXPECTED)
    return value


ISO_EXPECTED = "expected an ISO 8601 date-time with a UTC offset, e.g. 2026-11-20T00:00:00Z"

#: A timestamp query parameter: ISO 8601 text with an offset, which UTC can hold (as
#: :data:`~app.schemas.screening.AwareDatetime`, whose check runs after this one), in UTC.
IsoDatetime = Annotated[AwareDatetime, BeforeValidator(_iso_only)]


#: What a 422 looks like: every invalid field's path, never the value sent.
VALIDATION_PROBLEM: dict[str, Any] = {
    "type": "/problems/validation",
    "title": "The request is not valid",
    "status": 422,
    "detail": "See `errors` for each invalid field.",
    "instance": "/v1/screenings",
    "errors": [
        {
            "path": "subject.age",
            "pointer": "#/subject/age",
            "message": "Input should be greater than or equal to 0",
            "code": "greater_than_equal",
        }
    ],
}


class FieldProblem(BaseModel):
    path: str = Field(description="Dotted path of the invalid field, e.g. `subject.age`.")
    pointer: str = Field(description="RFC 6901 JSON pointer to the field, e.g. `#/subject/age`.")
    message: str = Field(description="What is wrong, in the negotiated language.")
    code: str = Field(description="A stable machine-readable code, e.g. `missing`.")


class Problem(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={"examples": [VALIDATION_PROBLEM]},
    )

    type: str = Field(description="A URI reference naming the problem type.")
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldProblem] | None = Field(
        default=None, description="Validation errors only: one entry per invalid field."
    )


def problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "model": Problem,
        "content": {"application/problem+json": {}},
    }


#: Responses every authenticated route can give.
AUTHENTICATED: dict[int | str, dict[str, Any]] = {
    400: problem("Malformed request (e.g. the body is not JSON)"),
    401: problem("No valid API key or token"),
    403: problem("The caller's role may not use this route"),
    413: problem("The body is larger than allowed"),
    415: problem("The body is not JSON"),
    422: problem("Invalid input; `errors` names each field path"),
    429: problem("Rate limit exceeded; see Retry-After"),
    500: problem("Internal error (no details are disclosed)"),
}


def responses(*extra: int, **described: str) -> dict[int | str, dict[str, Any]]:
    """AUTHENTICATED plus route-specific problem statuses, e.g. ``responses(404, 409)``."""
    defaults = {
        404: "Not found (or not visible to the caller)",
        409: "Conflict with the current state",
        503: "Not ready",
    }
    out = dict(AUTHENTICATED)
    for status in extra:
        out[status] = problem(described.get(f"s{status}", defaults.get(status, "Error")))
    return out


#: Examples as written, by their form without nulls (see :func:`_restore_examples`).
_EXAMPLES: dict[str, Any] = {}


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_without_nulls(v) for v in value]
    return value


def _key(value: Any) -> str:
    return json.dumps(_without_nulls(value), sort_keys=True, default=str)


def example(value: Any) -> Any:
    """Register an example so the document shows it as written (nulls included)."""
    encoded = jsonable_encoder(value)
    _EXAMPLES[_key(encoded)] = encoded
    return value


def ok(value: Any, description: str = "Success", status: int = 200) -> dict[int | str, Any]:
    """A JSON success response with an example, e.g. ``responses={**ok({...}), ...}``.

    FastAPI merges the route's response-model schema into it, so the example sits next to
    the schema it must validate against (tests/test_openapi.py checks that it does).
    """
    return {
        status: {
            "description": description,
            "content": {"application/json": {"example": example(value)}},
        }
    }


def _restore_examples(node: Any) -> None:
    """FastAPI renders the document with ``exclude_none``, which also drops every ``null``
    inside an example, leaving examples that no longer match their schema (a required but
    nullable field goes missing). Put registered examples back as written."""
    if isinstance(node, list):
        for item in node:
            _restore_examples(item)
        return
    if not isinstance(node, dict):
        return
    for name, value in node.items():
        if name == "example" and not isinstance(value, str):
            node[name] = _EXAMPLES.get(_key(value), value)
        elif name == "examples" and isinstance(value, list):
            node[name] = [_EXAMPLES.get(_key(v), v) for v in value]
        elif name == "examples" and isinstance(value, dict):
            for item in value.values():
                if isinstance(item, dict) and "value" in item:
                    item["value"] = _EXAMPLES.get(_key(item["value"]), item["value"])
        else:
            _restore_examples(value)


def _problem_example(status: int, description: str) -> dict[str, Any]:
    if status == 422:
        return VALIDATION_PROBLEM
    known: dict[int, type[errors.RutaError]] = {
        cls.status: cls
        for cls in (
            errors.BadRequest,
            errors.Unauthorized,
            errors.Forbidden,
            errors.NotFound,
            errors.Conflict,
            errors.PayloadTooLarge,
            errors.UnsupportedMediaType,
            errors.TooManyRequests,
            errors.ServiceUnavailable,
            errors.RutaError,
        )
    }
    cls = known.get(status)
    return {
        "type": cls.type if cls else "about:blank",
        "title": cls.title if cls else description,
        "status": status,
        "detail": description,
    }


def _finish(document: dict[str, Any]) -> None:
    _restore_examples(document.get("paths", {}))
    _restore_examples(document.get("webhooks", {}))
    for item in document.get("webhooks", {}).values():
        for operation in item.values():
            # What the partner answers, not FastAPI's guess for a route (a JSON 200, a 422).
            operation["responses"] = dict(_ANSWER)
    _restore_examples(document.get("components", {}))
    components = document.setdefault("components", {}).setdefault("schemas", {})
    problem_schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, schema in problem_schema.pop("$defs", {}).items():
        components.setdefault(name, schema)
    components.setdefault("Problem", problem_schema)
    # Cited by the application/fhir+json forms, which FastAPI does not collect itself.
    for model in (wh.FhirBundle, wh.FhirCodeSystem):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, item in [*schema.pop("$defs", {}).items(), (model.__name__, schema)]:
            components.setdefault(name, item)
    for item in document.get("paths", {}).values():
        for operation in item.values():
            for status, response in operation.get("responses", {}).items():
                if status[:1] not in ("4", "5"):
                    continue
                description = response.get("description") or "Error"
                response["content"] = {
                    PROBLEM_JSON: {
                        "schema": {"$ref": "#/components/schemas/Problem"},
                        "example": _problem_example(int(status), description),
                    }
                }
    for unused in ("HTTPValidationError", "ValidationError"):  # the second is in the first
        if f"#/components/schemas/{unused}" not in json.dumps(document):
            components.pop(unused, None)


def install(app: FastAPI) -> None:
    """Make every error response in the OpenAPI document RFC 9457
    ``application/problem+json`` (the ``Problem`` schema and an example for its status), and
    show examples as written; describe the tags and the webhooks partners receive; serve
    ``/docs`` and ``/redoc`` without a CDN. The app is created with
    ``generate_unique_id_function=operation_id`` and without FastAPI's own docs pages.

    FastAPI would otherwise also advertise ``application/json`` for error responses, and its
    own 422 ``HTTPValidationError`` shape, which Ruta never sends. FastAPI still generates
    (and caches) the document; this finishes each new one once.
    """
    app.openapi_tags = TAGS
    app.webhooks.routes.extend(WEBHOOKS.routes)
    install_docs(app)
    generate = app.openapi
    finished: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        document = generate()
        if not finished or finished[0] is not document:
            _finish(document)
            finished[:] = [document]
        return document

    app.openapi = openapi  # type: ignore[method-assign]


# --- Operation ids and tags -------------------------------------------------------------------

#: Every operation's stable id ("METHOD path" -> id): what a generated client names its
#: functions. Kept here, in one place, rather than on each route; tests/test_openapi.py
#: fails on a route (or webhook) missing from this table, and on a duplicate id.
OPERATION_IDS: dict[str, str] = {
    "GET /healthz": "checkLiveness",
    "GET /readyz": "checkReadiness",
    "GET /metrics": "getMetrics",
    "POST /v1/screenings": "submitScreening",
    "POST /v1/screenings/batch": "submitScreeningBatch",
    "GET /v1/screenings/{screening_id}": "getScreening",
    "GET /v1/screenings/{screening_id}/personal": "readPersonalData",
    "POST /v1/erasures": "eraseSubject",
    "POST /v1/screenings/{screening_id}/consent/withdraw": "withdrawConsent",
    "GET /v1/screenings/{screening_id}/disclosures": "listDisclosures",
    "GET /v1/audit/events": "listAuditEvents",
    "GET /v1/audit/verify": "verifyAuditTrail",
    "GET /v1/audit/checkpoints": "listAuditCheckpoints",
    "GET /v1/audit/public-key": "getAuditPublicKey",
    "GET /v1/audit/export": "exportAuditTrail",
    "GET /v1/audit/proofs/referrals/{referral_id}": "proveReferralInclusion",
    "GET /v1/audit/proofs/screenings/{screening_id}/disclosures": "proveDisclosureInclusion",
    "GET /v1/audit/proofs/consistency": "proveConsistency",
    "GET /v1/rules": "getRuleSet",
    "POST /v1/rules/evaluate": "evaluateRules",
    "GET /v1/partners": "listPartners",
    "POST /v1/partners": "createPartner",
    "PATCH /v1/partners/me/capacity": "reportCapacity",
    "GET /v1/partners/{partner_id}": "getPartner",
    "PATCH /v1/partners/{partner_id}": "updatePartner",
    "POST /v1/partners/{partner_id}/pause": "pausePartner",
    "POST /v1/partners/{partner_id}/resume": "resumePartner",
    "POST /v1/partners/{partner_id}/secrets/rotate": "rotatePartnerSecret",
    "GET /v1/services": "listServices",
    "POST /v1/referrals/{referral_id}/status": "reportReferralStatus",
    "GET /v1/referrals/{referral_id}/details": "getReferralDetails",
    "GET /v1/referrals": "listReferrals",
    "GET /v1/referrals/{referral_id}": "explainReferral",
    "GET /v1/deliveries/dead-letters": "listDeadLetters",
    "GET /v1/deliveries/{delivery_id}": "getDelivery",
    "POST /v1/deliveries/{delivery_id}/replay": "replayDelivery",
    "GET /v1/reports/referrals": "reportReferralsPerWeek",
    "GET /v1/reports/acknowledgement": "reportTimeToAcknowledge",
    "GET /v1/reports/outcomes": "reportOutcomesPerWeek",
    "GET /v1/reports/rules": "reportRulesFired",
    "GET /fhir/CodeSystem/{code_system}": "getFhirCodeSystem",
    "POST /demo/partners/{partner_id}/inbox": "receiveDemoDelivery",
    "GET /demo/partners/{partner_id}/inbox": "listDemoInbox",
    # What partners receive (OAS 3.1 webhooks): the event names.
    "POST referral.created": "referralCreated",
    "POST referral.revoked": "referralRevoked",
    "POST referral.consent_withdrawn": "referralConsentWithdrawn",
    "POST notification.created": "notificationCreated",
}


def route_key(route: APIRoute) -> str:
    return f"{min(route.methods or ('GET',))} {route.path_format}"


def operation_id(route: APIRoute) -> str:
    """FastAPI's ``generate_unique_id_function``: the id from :data:`OPERATION_IDS`, or
    FastAPI's default for a route not listed yet (the test names it)."""
    return OPERATION_IDS.get(route_key(route)) or generate_unique_id(route)


#: Every tag, with what a caller finds under it (the document lists them in this order).
TAGS: list[dict[str, Any]] = [
    {
        "name": "screenings",
        "description": "For clinic apps: submit a screening (alone or in a batch collected "
        "offline), read back its decision, and record a withdrawal of consent.",
    },
    {
        "name": "referrals",
        "description": "For partners: report what happened to a referral, and fetch a "
        "thin-mode referral's details. For auditors: who was referred where, when, why and on "
        "what legal basis, and who received which data.",
    },
    {
        "name": "partners",
        "description": "For admins: the partner directory (also as an Open Referral HSDS 3 "
        "view). For partners: report available capacity.",
    },
    {
        "name": "audit",
        "description": "For auditors: the hash-chained audit trail, its signed checkpoints, "
        "verification and export.",
    },
    {
        "name": "personal data",
        "description": "Audited reads of a screening's encrypted personal fields, and "
        "erasure of a person's data.",
    },
    {
        "name": "rules",
        "description": "The active rule set, and a dry run of the rules on a screening.",
    },
    {
        "name": "reports",
        "description": "For auditors and admins: aggregate reports (referrals per week, time "
        "to acknowledge, fallback and escalation rates, the rules that fire most) in JSON or "
        "CSV, with every figure about fewer than k people suppressed (docs/console.md).",
    },
    {
        "name": "deliveries",
        "description": "For admins: delivery attempts, dead letters and replays.",
    },
    {
        "name": "fhir",
        "description": "The FHIR CodeSystems that fhir-r4 bodies cite, served at the "
        "canonical URLs the bodies name.",
    },
    {
        "name": "health",
        "description": "Liveness and readiness, for load balancers and orchestrators.",
    },
    {
        "name": "operations",
        "description": "Prometheus metrics, for operators (behind a token in production).",
    },
    {
        "name": "demo partners (development only)",
        "description": "Ruta's own demo partner inboxes, mounted only with "
        "RUTA_ENV=development, so the walkthrough works without a partner.",
    },
    {
        "name": "webhooks",
        "description": "What Ruta posts to a partner's endpoint, signed with Standard "
        "Webhooks headers (docs/partners.md).",
    },
]


# --- Webhooks: what partners receive ------------------------------------------------------

#: Standard Webhooks headers on every delivery.
_WEBHOOK_HEADERS = [
    {
        "name": name,
        "in": "header",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }
    for name, description in (
        ("webhook-id", "The delivery's id: the same on every retry. Deduplicate on it."),
        ("webhook-timestamp", "Unix seconds when this attempt was signed."),
        ("webhook-signature", "Space-separated `v1,<base64>` HMAC-SHA256 signatures."),
    )
]
_ANSWER = {
    "200": {"description": "Any 2xx within a few seconds: received. Do the work afterwards."},
    "410": {"description": "Gone: Ruta pauses your endpoint."},
}


def fhir_bundle_media(value: dict[str, Any]) -> dict[str, Any]:
    """The ``application/fhir+json`` form of a body, with an example: a FHIR R4 Bundle."""
    return {"schema": {"$ref": "#/components/schemas/FhirBundle"}, "example": example(value)}


def partner_document(document: dict[str, Any], headers: dict[str, str] | None) -> Response:
    """A body for a partner as its format wants it: a FHIR Bundle as
    ``application/fhir+json`` (in the order built, resourceType first), else JSON."""
    if document.get("resourceType") == "Bundle":
        return Response(fhir.dumps(document), media_type=fhir.CONTENT_TYPE, headers=headers)
    return JSONResponse(document, headers=headers)


def _fhir_form(*examples: tuple[str, str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "schema": {"$ref": "#/components/schemas/FhirBundle"},
        "examples": {
            name: {"summary": summary, "value": example(value)} for name, summary, value in examples
        },
    }


def _webhook_extra(fhir_examples: tuple[tuple[str, str, dict[str, Any]], ...]) -> dict[str, Any]:
    extra: dict[str, Any] = {"parameters": _WEBHOOK_HEADERS}
    if fhir_examples:
        extra["requestBody"] = {"content": {"application/fhir+json": _fhir_form(*fhir_examples)}}
    return extra


#: The webhooks, declared once: FastAPI documents them from these routes (never served).
WEBHOOKS = APIRouter(tags=["webhooks"], generate_unique_id_function=operation_id)


@WEBHOOKS.post(
    "referral.created",
    summary="A new referral for you",
    description="Posted to your endpoint when a referral is assigned to you: the "
    "minimised body your service needs (`thin: false`), or in thin mode only ids and the "
    "`details_url` to fetch it with your key (`thin: true`; the fetch answers the "
    "`referral.details` body). A `fhir-r4` partner receives the same body as a FHIR R4 "
    "Bundle (`application/fhir+json`). Retries carry the same `webhook-id` and bytes.",
    openapi_extra=_webhook_extra((("fhir", "The fhir-r4 rendering", ex.FHIR_REFERRAL_CREATED),)),
)
async def referral_created(
    body: Annotated[
        wh.ReferralCreated | wh.ReferralCreatedThin,
        Body(
            openapi_examples={
                "full": {"summary": "Full", "value": example(ex.REFERRAL_CREATED)},
                "thin": {"summary": "Thin mode", "value": example(ex.REFERRAL_CREATED_THIN)},
            }
        ),
    ],
) -> None:  # pragma: no cover - documentation only
    """Documented, never served."""


@WEBHOOKS.post(
    "referral.revoked",
    summary="The person withdrew consent: stop and delete",
    description="The referral rested on consent and is revoked: stop, and delete what you "
    "received under your data-protection policy; its details answer 410 from now on. Sent "
    "to every partner that received or could fetch it (thin mode included). Ids and an "
    "instruction only, never data about the person. A `fhir-r4` partner receives the "
    "referral's Task, `cancelled`.",
    openapi_extra=_webhook_extra((("fhir", "The fhir-r4 rendering", ex.FHIR_REFERRAL_REVOKED),)),
)
async def referral_revoked(
    body: Annotated[
        wh.ReferralRevoked,
        Body(openapi_examples={"revoked": {"value": example(ex.REFERRAL_REVOKED)}}),
    ],
) -> None:  # pragma: no cover - documentation only
    """Documented, never served."""


@WEBHOOKS.post(
    "referral.consent_withdrawn",
    summary="The person withdrew consent, but the referral stands",
    description="The referral rests on child-protection duty or vital interest and stands: "
    "continue, and use the data for that purpose only. Its details keep answering, with "
    "`Ruta-Consent: withdrawn; stands-on=<basis>`. A `fhir-r4` partner receives the "
    "referral's Task, still `requested`, business status `consent-withdrawn`.",
    openapi_extra=_webhook_extra(
        (("fhir", "The fhir-r4 rendering", ex.FHIR_REFERRAL_CONSENT_WITHDRAWN),)
    ),
)
async def referral_consent_withdrawn(
    body: Annotated[
        wh.ReferralConsentWithdrawn,
        Body(openapi_examples={"stands": {"value": example(ex.REFERRAL_CONSENT_WITHDRAWN)}}),
    ],
) -> None:  # pragma: no cover - documentation only
    """Documented, never served."""


@WEBHOOKS.post(
    "notification.created",
    summary="A non-identifying notification",
    description="For the directory's `notification_recipient` only, when an adult declines "
    "consent (statistics, duty to notify): the region, an age band, sex, the trafficking "
    "indicators, the month and the referring organisation; nothing that could single the "
    "person out. `ruta-json` only.",
    openapi_extra=_webhook_extra(()),
)
async def notification_created(
    body: Annotated[
        wh.NotificationCreated,
        Body(openapi_examples={"notification": {"value": example(ex.NOTIFICATION_CREATED)}}),
    ],
) -> None:  # pragma: no cover - documentation only
    """Documented, never served."""


# --- /docs and /redoc without a CDN -----------------------------------------------------------

#: Swagger UI 5 and ReDoc 2, shipped inside the fastapi-offline package (see pyproject.toml).
DOCS_ASSETS = Path(fastapi_offline.__file__).parent / "static"
DOCS_STATIC = "/docs/assets"


def install_docs(app: FastAPI) -> None:
    """Serve ``/docs`` (Swagger UI) and ``/redoc`` from assets on disk, so they work with
    no internet access; every URL the pages load is on this server (no CDN, no fonts, no
    validator badge)."""
    app.mount(DOCS_STATIC, StaticFiles(directory=DOCS_ASSETS), name="docs-assets")
    favicon = f"{DOCS_STATIC}/favicon.png"
    openapi_url = app.openapi_url or "/openapi.json"
    redirect = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    async def swagger(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=root + redirect,
            swagger_js_url=f"{root}{DOCS_STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_STATIC}/swagger-ui.css",
            swagger_favicon_url=root + favicon,
            swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None},
        )

    async def oauth2_redirect(request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_STATIC}/redoc.standalone.js",
            redoc_favicon_url=root + favicon,
            with_google_fonts=False,
        )

    app.add_route("/docs", swagger, include_in_schema=False)
    app.add_route(redirect, oauth2_redirect, include_in_schema=False)
    app.add_route("/redoc", redoc, include_in_schema=False)
