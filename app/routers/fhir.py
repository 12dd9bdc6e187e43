"""Ruta's FHIR code systems, at the canonical URLs fhir-r4 bodies cite
(``<public base URL>/fhir/CodeSystem/<name>``), so a partner's FHIR tooling can resolve the
codes it receives. Public: vocabulary only, nothing about a person or a partner."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.deps import SettingsDep
from app.errors import NotFound
from app.openapi import FHIR_JSON, example, problem
from app.partners import fhir
from app.partners.minimiser import body_fields
from app.schemas import examples

router = APIRouter(prefix="/fhir", tags=["fhir"])


@router.get(
    "/CodeSystem/{code_system}",
    summary="One of Ruta's FHIR code systems",
    description="The FHIR R4 `CodeSystem` resource behind a `system` URL in a fhir-r4 body: "
    "`service-category`, `rule` (the active rule set's rules, with their reasons in each "
    "locale), `field` (the ruta-json field each `Task.input` carries), `event` (the "
    "`Bundle.meta.tag`), `business-status` and `status-reason`. No key needed: vocabulary "
    "only. Answered as `application/fhir+json`.",
    responses={
        200: {
            "description": "The CodeSystem",
            "content": {
                FHIR_JSON: {
                    "schema": {"$ref": "#/components/schemas/FhirCodeSystem"},
                    "example": example(examples.FHIR_CODE_SYSTEM),
                }
            },
        },
        404: problem("Ruta defines no code system of this name"),
        429: problem("Rate limit exceeded; see Retry-After"),
    },
    response_class=Response,
)
async def get_code_system(code_system: str, request: Request, settings: SettingsDep) -> Response:
    rule_set = request.app.state.rule_set
    resource = fhir.code_system(
        code_system,
        public_base_url=settings.public_base_url,
        rules=[
            (r.rule.id, r.rule.description, r.rule.guideline, r.rule.reason) for r in rule_set.rules
        ],
        rules_version=rule_set.version,
        fields=body_fields(),
    )
    if resource is None:
        raise NotFound("Ruta defines no code system of this name.")
    return Response(fhir.dumps(resource), media_type=fhir.CONTENT_TYPE)
