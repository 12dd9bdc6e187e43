from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from app.db import purge_dead_rows
from app.deps import AdminDep, ClinicOrAdminDep, SessionDep, SettingsDep
from app.models.base import utcnow
from app.openapi import ok, problem, responses
from app.schemas import examples
from app.services import erasure

router = APIRouter(tags=["personal data"], responses=responses(404))


class ErasureIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [examples.ERASURE_IN]})

    organisation: str = Field(min_length=1, max_length=200)
    case_code: str = Field(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    reason: erasure.ErasureReason


class ErasureOut(BaseModel):
    subject_id: uuid.UUID
    erased_at: datetime
    screenings_made_unreadable: int


@router.post(
    "/v1/erasures",
    status_code=201,
    response_model=ErasureOut,
    summary="Erase a subject's personal data (crypto-shredding)",
    description="For admins acting on a data-subject request, withdrawn consent, expired "
    "retention or an entry made in error. Deletes the subject's data key: every personal "
    "field of every screening of this subject (found by organisation and case code), and "
    "any queued outbound body, becomes unreadable at once and cannot be recovered. "
    "Non-personal records stay for statistics; the erasure is recorded in the audit trail, "
    "which still verifies. 404 when no subject has this case code in this organisation.",
    responses={
        **ok(examples.ERASURE_OUT, "Erased", 201),
        404: problem("No subject with this case code in this organisation"),
    },
)
async def erase(
    body: ErasureIn,
    principal: AdminDep,
    session: SessionDep,
    request: Request,
    background: BackgroundTasks,
) -> ErasureOut:
    subject = await erasure.find_subject(session, body.organisation, body.case_code)
    now = utcnow()
    count = await erasure.erase_subject(
        session, subject=subject, reason=body.reason, actor=principal, now=now
    )
    # Runs after the commit (the session dependency commits before the response).
    background.add_task(purge_dead_rows, request.app.state.engine)
    return ErasureOut(subject_id=subject.id, erased_at=now, screenings_made_unreadable=count)


class PersonalOut(BaseModel):
    screening_id: uuid.UUID
    purpose: erasure.ReadPurpose
    erased: bool = Field(description="The subject was erased: nothing personal is readable.")
    personal: dict[str, Any] = Field(description="Personal fields by dotted path.")


@router.get(
    "/v1/screenings/{screening_id:uuid}/personal",
    response_model=PersonalOut,
    summary="Read a screening's personal fields, for a recorded purpose",
    description="Clinics read their own organisation's screenings; admins any. The purpose is "
    "required and every read is recorded in the audit trail (who, which fields, why), and "
    "shows in the case's disclosure list. `personal` maps dotted field paths to values; it is "
    "empty with `erased: true` once the subject was erased. A 500 "
    "`/problems/undecryptable` means the key-encryption key in use cannot unwrap this "
    "subject's key (see key rotation in docs/operations.md).",
    responses={
        **ok(examples.PERSONAL_OUT, "The personal fields held, by path"),
        404: problem("No such screening (for a clinic: in its organisation)"),
    },
)
async def read_personal(
    screening_id: uuid.UUID,
    purpose: Annotated[erasure.ReadPurpose, Query(description="Why the data is read.")],
    principal: ClinicOrAdminDep,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
) -> PersonalOut:
    screening, subject, personal = await erasure.read_personal(
        session,
        settings,
        principal,
        screening_id,
        purpose,
        request_id=request.state.request_id,
    )
    return PersonalOut(
        screening_id=screening.id,
        purpose=purpose,
        erased=subject.wrapped_dek is None,
        personal=personal,
    )
