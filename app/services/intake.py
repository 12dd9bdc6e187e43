"""Screening intake: the one place a screening enters Ruta.

Everything a screening causes is written in the caller's transaction: the subject and its
data key, the screening with its personal fields encrypted, and (as later stages land) the
decision, referrals, outbox deliveries and audit events. Services only flush; the request
dependency commits.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app import audit, crypto
from app.audit import Action
from app.auth import Principal
from app.db import attach
from app.errors import Conflict, NotFound, ValidationFailed, field_error
from app.models import Screening, Subject
from app.referrals.service import create_referrals
from app.referrals.views import decision_dict
from app.schemas.screening import ScreeningIn, age_of, split_personal
from app.settings import Settings

if TYPE_CHECKING:
    from app.rules import RuleSet


@dataclass(frozen=True, slots=True)
class IntakeResult:
    screening: Screening
    created: bool
    #: The decision as the API shows it, built from what intake just wrote (None on replay:
    #: the caller reads it back).
    decision: dict[str, Any] | None = None


def canonical_json(document: Any) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def fingerprint(secret_key: bytes, document: dict[str, Any]) -> bytes:
    """Keyed, so the stored fingerprint cannot be used to guess a screening's content."""
    return hmac.new(secret_key, canonical_json(document), hashlib.sha256).digest()


@cache
def _insert_or_skip(dialect: str, table: str) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING RETURNING id``, built once per dialect: a statement
    object reused with fresh parameters is compiled and cache-keyed once, not per request."""
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    if table == "subjects":
        return (
            insert(Subject)
            .on_conflict_do_nothing(index_elements=["organisation", "case_code"])
            .returning(Subject.id)
        )
    return insert(Screening).on_conflict_do_nothing(index_elements=["id"]).returning(Screening.id)


async def get_or_create_subject(
    session: AsyncSession, settings: Settings, organisation: str, case_code: str, now: datetime
) -> tuple[Subject, bytes]:
    """The subject and its plaintext data key. Race-safe: ON CONFLICT DO NOTHING.

    A new subject costs one statement (the insert returns its id); an existing one, two.
    """
    kek = settings.kek_bytes()
    subject_id = uuid.uuid4()
    dek = crypto.new_dek()
    values = {
        "id": subject_id,
        "organisation": organisation,
        "case_code": case_code,
        "wrapped_dek": crypto.wrap_dek(kek, dek, subject_id),
        "kek_id": crypto.kek_id(kek),
        "created_at": now,
    }
    statement = _insert_or_skip(session.get_bind().dialect.name, "subjects")
    inserted = (await session.execute(statement, values)).scalar_one_or_none()
    if inserted is not None:
        return attach(session, Subject(**values, erased_at=None)), dek
    existing = (
        await session.execute(
            select(Subject).where(
                Subject.organisation == organisation, Subject.case_code == case_code
            )
        )
    ).scalar_one()
    if existing.wrapped_dek is None:
        # The subject was erased; a new screening starts a new key, the old data stays gone.
        dek = crypto.new_dek()
        existing.wrapped_dek = crypto.wrap_dek(kek, dek, existing.id)
        existing.kek_id = crypto.kek_id(kek)
        existing.erased_at = None
        return existing, dek
    return existing, crypto.unwrap_with_any(
        settings.keks_by_id(), existing.wrapped_dek, existing.id, existing.kek_id
    )


def _check_screened_at(screening: ScreeningIn, settings: Settings, now: datetime) -> None:
    skew = timedelta(seconds=settings.screened_at_max_skew_seconds)
    if screening.source.screened_at > now + skew:
        raise ValidationFailed(
            [
                field_error(
                    ("source", "screened_at"), "screened_at is in the future", "future_datetime"
                )
            ]
        )


def owning_organisation(principal: Principal, screening: ScreeningIn) -> str:
    assert principal.organisation is not None
    declared = screening.source.organisation
    if declared is not None and declared != principal.organisation:
        raise ValidationFailed(
            [
                field_error(
                    ("source", "organisation"),
                    "source.organisation must be the organisation of your API client.",
                    "organisation_mismatch",
                )
            ]
        )
    return principal.organisation


async def submit_screening(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    screening: ScreeningIn,
    *,
    rule_set: RuleSet,
    now: datetime,
    batch: bool = False,
    request_id: str | None = None,
) -> IntakeResult:
    organisation = owning_organisation(principal, screening)
    _check_screened_at(screening, settings, now)
    document = screening.model_dump(mode="json")
    secret = settings.secret_key.get_secret_value().encode()
    print_ = fingerprint(secret, document)

    # A date of birth is personal and encrypted; the rules read the age derived from it.
    derived_age = age_of(screening.subject, now.date())
    data, personal = split_personal(document)
    if screening.subject.age is None and derived_age is not None:
        data["subject"]["age"] = derived_age
    data["subject"]["age_source"] = (
        "stated"
        if screening.subject.age is not None
        else ("date_of_birth" if derived_age is not None else "unknown")
    )

    subject, dek = await get_or_create_subject(
        session, settings, organisation, screening.subject.case_code, now
    )
    personal_ct = (
        crypto.encrypt_field(
            dek,
            canonical_json(personal),
            table="screenings",
            column="personal_ct",
            row_id=screening.id,
        )
        if personal
        else None
    )
    values = {
        "id": screening.id,
        "organisation": organisation,
        "client_id": principal.client_id,
        "subject_id": subject.id,
        "schema_version": screening.schema_version,
        "screened_at": screening.source.screened_at,
        "received_at": now,
        "fingerprint": print_,
        "data": data,
        "personal_ct": personal_ct,
        "personal_fields": sorted(personal),
    }
    # Insert first: a replay (or a concurrent request with the same id) is the exception,
    # and ON CONFLICT tells us about it without a read before every write.
    result = await session.execute(
        _insert_or_skip(session.get_bind().dialect.name, "screenings"), values
    )
    if result.scalar_one_or_none() is None:
        existing = await session.get(Screening, screening.id, populate_existing=True)
        assert existing is not None
        return await _replay(session, principal, existing, organisation, print_, batch=batch)
    stored = attach(session, Screening(**values))
    await _audit_received(session, principal, stored, subject, personal, batch, request_id)
    # Rules read the age derived from a date of birth; they never see personal fields.
    facts = (
        screening
        if screening.subject.age is not None or derived_age is None
        else screening.model_copy(
            update={"subject": screening.subject.model_copy(update={"age": derived_age})}
        )
    )
    decision = rule_set.evaluate(facts, trace=True)
    decision_row, created, partners = await create_referrals(
        session,
        settings,
        screening_row=stored,
        screening=facts,
        decision=decision,
        actor=principal,
        now=now,
        request_id=request_id,
        dek=dek,
    )
    view = decision_dict(
        decision_row, (c.referral for c in created), {p.id: p.name for p in partners}
    )
    return IntakeResult(screening=stored, created=True, decision=view)


async def _audit_received(
    session: AsyncSession,
    principal: Principal,
    stored: Screening,
    subject: Subject,
    personal: dict[str, Any],
    batch: bool,
    request_id: str | None,
) -> None:
    await audit.record(
        session,
        action=Action.screening_received,
        actor=principal,
        screening_id=stored.id,
        subject_id=subject.id,
        request_id=request_id,
        data={
            "schema_version": stored.schema_version,
            "personal_fields": sorted(personal),
            "batch": batch,
        },
    )


async def _replay(
    session: AsyncSession,
    principal: Principal,
    existing: Screening,
    organisation: str,
    print_: bytes,
    *,
    batch: bool,
) -> IntakeResult:
    if existing.organisation != organisation:
        # Another organisation's id: answer as for any conflict, revealing nothing of it.
        raise Conflict("A screening with this id already exists with a different body.")
    if not hmac.compare_digest(existing.fingerprint, print_):
        raise Conflict(
            "A screening with this id already exists with a different body. "
            "Use a new id for a new screening."
        )
    await audit.record(
        session,
        action=Action.screening_replayed,
        actor=principal,
        screening_id=existing.id,
        data={"schema_version": existing.schema_version, "batch": batch},
    )
    return IntakeResult(screening=existing, created=False)


async def get_screening_for(
    session: AsyncSession, principal: Principal, screening_id: uuid.UUID
) -> Screening:
    screening = await session.get(Screening, screening_id)
    if screening is None or (
        principal.organisation is not None and screening.organisation != principal.organisation
    ):
        # Another organisation's screening is indistinguishable from a missing one.
        raise NotFound("No screening with this id.")
    return screening
