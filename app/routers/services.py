"""The partner directory as Open Referral HSDS 3 services, for admins and auditors.

Read only. Auditors may read it (they judge where referrals went, and read and never
write); clinics and partners may not: the directory says where shelters and the
child-protection authority serve and how much room they have, which only those who run or
audit the routing need.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from app.auth import Principal
from app.deps import SessionDep, require_roles
from app.models import Role
from app.models.base import utcnow
from app.openapi import ok, problem, responses
from app.partners.hsds import service_page
from app.schemas import examples
from app.schemas.hsds import ServicePage

router = APIRouter(prefix="/v1/services", tags=["partners"], responses=responses())

AdminOrAuditorDep = Annotated[Principal, Depends(require_roles(Role.admin, Role.auditor))]


@router.get(
    "",
    response_model=ServicePage,
    summary="The directory as Open Referral HSDS 3 services",
    description="For admins and auditors: every partner entry as an HSDS 3 `service` with its "
    "`organization`, `service_areas` (departments, ubigeo prefixes or the whole country), "
    "eligibility (`minimum_age`, `maximum_age`, `eligibility_description`), `languages`, "
    "`schedules` (RFC 5545 weekly rules with the partner's UTC offset), `capacities`, and "
    "`attributes` carrying Ruta's partner id, role and service categories as taxonomy "
    "terms. HSDS ids are UUIDs derived from Ruta's ids, stable across calls. Paginated as "
    "the HSDS API does (`page` from 1, `per_page`), ordered by partner id. Never an "
    "endpoint URL or a secret.",
    responses={
        **ok(examples.SERVICE_PAGE, "A page of services"),
        403: problem("Not an admin or an auditor"),
    },
)
async def list_services(
    _reader: AdminOrAuditorDep,
    session: SessionDep,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=200)] = 50,
) -> ServicePage:
    return await service_page(session, page=page, per_page=per_page, now=utcnow())
