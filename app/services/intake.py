"""Screening intake: the one place a screening enters Ruta.

Two steps. :func:`prepare` decides a screening without touching the database: validation
against the caller's organisation, the keyed fingerprint, the split into stored and
personal fields, the rules, matching, and each partner's minimised body. :func:`write`
stores a group of prepared screenings in one transaction: the subjects and their data keys,
the screenings with their personal fields encrypted, the decisions, referrals, outbox
deliveries and audit events, one INSERT per table for the whole group.

``POST /v1/screenings`` hands its prepared screening to the process's
:class:`~app.services.grouping.GroupCommitter`, which commits the screenings of concurrent
requests together; the batch route writes its items as one group in its own transaction.
Either way a screening is committed together with everything it causes, or not at all.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, delete, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from app import audit, crypto
from app.audit import Action
from app.auth import Principal
from app.db import insert_new_rows, insert_rows
from app.delivery import outbox
from app.errors import Conflict, NotFound, ValidationFailed, field_error
from app.models import Decision, Delivery, Referral, ReferralEvent, Screening, Subject
from app.partners.cache import cached_directory
from app.partners.directory import Partner
from app.partners.service import directory_partners
from app.referrals.planning import ReferralPlan, plan_referrals, record_decision, write_rows
from app.referrals.views import decision_dict
from app.rules.facts import facts_at, years_between
from app.schemas.decision import Urgency
from app.schemas.screening import ScreeningIn, split_personal
from app.settings import Settings

if TYPE_CHECKING:
    from app.rules import RuleSet
    from app.services.grouping import GroupCommitter

_SUBJECTS = cast(Table, Subject.__table__)
_SCREENINGS = cast(Table, Screening.__table__)
_DECISIONS = cast(Table, Decision.__table__)
_REFERRALS = cast(Table, Referral.__table__)
_REFERRAL_EVENTS = cast(Table, ReferralEvent.__table__)
_DELIVERIES = cast(Table, Delivery.__table__)


def canonical_json(document: Any) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def fingerprint(secret_key: bytes, document: dict[str, Any]) -> bytes:
    """Keyed, so the stored fingerprint cannot be used to guess a screening's content."""
    return hmac.new(secret_key, canonical_json(document), hashlib.sha256).digest()


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


#: The oldest age a date of birth may give (the schema's bound on a stated age).
MAX_AGE = 120


def _check_date_of_birth(screening: ScreeningIn, settings: Settings, now: datetime) -> None:
    """Impossible dates of birth are refused, naming the field (never its value): one after
    the screening (or in the future), or one giving an age over 120."""
    born = screening.subject.date_of_birth
    if born is None:
        return
    skew = timedelta(seconds=settings.screened_at_max_skew_seconds)
    latest = min(screening.source.screened_at, now + skew)
    where = ("subject", "date_of_birth")
    if born > latest.date() + timedelta(days=1):  # a day's grace for time zones
        raise ValidationFailed(
            [field_error(where, "date_of_birth is after the screening", "future_date")]
        )
    if years_between(born, screening.source.screened_at.date()) > MAX_AGE:
        raise ValidationFailed(
            [field_error(where, "date_of_birth gives an age over 120", "implausible_age")]
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


@dataclass(slots=True)
class Plan:
    """Everything one screening will write, worked out before any SQL: it is validated,
    fingerprinted, split into stored and personal fields, decided by the rules, and each
    referral is matched to a partner with its minimised body. :func:`write` stores a group
    of plans in the caller's transaction."""

    principal: Principal
    screening: ScreeningIn
    organisation: str
    now: datetime
    batch: bool
    request_id: str | None
    fingerprint: bytes
    data: dict[str, Any]
    personal: dict[str, Any]
    referrals: ReferralPlan
    #: Whether the rules decided an emergency referral.
    emergency: bool

    @property
    def id(self) -> uuid.UUID:
        return self.screening.id

    @property
    def subject_key(self) -> tuple[str, str]:
        return self.organisation, self.screening.subject.case_code


@dataclass(frozen=True, slots=True)
class IntakeResult:
    screening: Screening
    created: bool
    #: The decision as the API shows it, built from what intake just wrote (None on replay:
    #: the caller reads it back).
    decision: dict[str, Any] | None = None


def prepare(
    settings: Settings,
    principal: Principal,
    screening: ScreeningIn,
    *,
    rule_set: RuleSet,
    partners: Sequence[Partner],
    now: datetime,
    batch: bool = False,
    request_id: str | None = None,
) -> Plan:
    """Decide a screening without touching the database (raises :class:`ValidationFailed`
    for an organisation mismatch or a ``screened_at`` in the future)."""
    organisation = owning_organisation(principal, screening)
    _check_screened_at(screening, settings, now)
    _check_date_of_birth(screening, settings, now)
    document = screening.model_dump(mode="json")
    secret = settings.secret_key.get_secret_value().encode()

    # The rules read the facts as of now (docs/protocol.md, rules 1 and 6): the age from a
    # date of birth (personal and encrypted: the rules never see it), the lower age when
    # the two disagree, and the hours since sexual violence with the time since the
    # screening added. The stored data keeps the age the decision read, and where it came
    # from; the clinical hours stay as screened (the trace records the adjustment).
    facts = facts_at(screening, now)
    data, personal = split_personal(document)
    subject = facts.screening.subject
    data["subject"]["age"] = subject.age
    data["subject"]["age_disputed"] = subject.age_disputed
    age_adjustment = facts.adjustments.get("subject.age")
    data["subject"]["age_source"] = (
        str(age_adjustment["source"])
        if age_adjustment
        else ("stated" if subject.age is not None else "unknown")
    )
    decision = rule_set.decide(facts, trace=True)
    return Plan(
        emergency=any(d.urgency is Urgency.emergency for d in decision.referrals),
        principal=principal,
        screening=screening,
        organisation=organisation,
        now=now,
        batch=batch,
        request_id=request_id,
        fingerprint=fingerprint(secret, document),
        data=data,
        personal=personal,
        referrals=plan_referrals(
            settings,
            screening_id=screening.id,
            organisation=organisation,
            screening=facts.screening,
            decision=decision,
            partners=partners,
            now=now,
            document=document if facts.screening is screening else None,
        ),
    )


async def write(
    session: AsyncSession, settings: Settings, plans: Sequence[Plan]
) -> list[IntakeResult | None]:
    """Store a group of planned screenings in the caller's transaction, with one INSERT per
    table for the whole group: subjects, screenings, decisions, referrals, their history,
    the outbox; and every audit event, appended to the chain at commit.

    Returns each plan's result, or None where a screening with its id already exists (a
    replay, a conflict, or the same id twice in the group): nothing is written for it, and
    the caller answers it with :func:`replay` once this group is committed. Any other
    failure raises, and the caller rolls the whole group back.
    """
    results: list[IntakeResult | None] = [None] * len(plans)
    first: dict[uuid.UUID, int] = {}
    for index, plan in enumerate(plans):
        first.setdefault(plan.id, index)
    live = [plans[index] for index in first.values()]
    if not live:
        return results
    subjects = await _subjects(session, settings, {p.subject_key for p in live}, live[0].now)

    rows: list[dict[str, Any]] = []
    for plan in live:
        subject_id, dek, _ = subjects[plan.subject_key]
        rows.append(_screening_row(plan, subject_id, dek))
    # Insert first: a replay (or a concurrent request with the same id) is the exception,
    # and ON CONFLICT tells us about it without a read before every write.
    inserted = await insert_new_rows(session, _SCREENINGS, rows, unique=("id",))
    stored = [(plan, row) for plan, row in zip(live, rows, strict=True) if row["id"] in inserted]
    if len(stored) < len(live):
        await _drop_unused_subjects(session, subjects, [plan for plan, _ in stored])

    events: list[dict[str, Any]] = []
    deliveries: list[dict[str, Any]] = []
    for plan, _ in stored:
        subject_id, dek, _ = subjects[plan.subject_key]
        write_rows(
            plan.referrals,
            subject_id=subject_id,
            dek=dek,
            actor=plan.principal,
            now=plan.now,
            request_id=plan.request_id,
            events=events,
            deliveries=deliveries,
        )
    await insert_rows(
        session, _DECISIONS, [plan.referrals.decision_row.row() for plan, _ in stored]
    )
    await insert_rows(
        session,
        _REFERRALS,
        [r.row() for plan, _ in stored for r, _, _, _ in plan.referrals.referrals],
    )
    await insert_rows(session, _REFERRAL_EVENTS, events)
    await insert_rows(session, _DELIVERIES, deliveries)
    if deliveries:
        await outbox.announce(session, max(_urgencies(stored), key=lambda u: u.rank))

    for plan, row in stored:
        screening = Screening(**row)
        await _audit_received(session, plan, screening)
        await record_decision(
            session,
            plan.referrals,
            screening_id=plan.id,
            subject_id=screening.subject_id,
            actor=plan.principal,
            request_id=plan.request_id,
        )
        view = decision_dict(
            plan.referrals.decision_row,
            (r for r, _, _, _ in plan.referrals.referrals),
            plan.referrals.partner_names(),
        )
        results[first[plan.id]] = IntakeResult(screening=screening, created=True, decision=view)
    return results


def _urgencies(stored: Sequence[tuple[Plan, dict[str, Any]]]) -> Iterator[Urgency]:
    """The urgency of every delivery the group queued (a notification is routine)."""
    for plan, _ in stored:
        for _, decided, body, _ in plan.referrals.referrals:
            if body is not None:
                yield decided.urgency
        if plan.referrals.notification is not None:
            yield Urgency.routine


def _screening_row(plan: Plan, subject_id: uuid.UUID, dek: bytes) -> dict[str, Any]:
    personal = plan.personal
    return {
        "id": plan.id,
        "organisation": plan.organisation,
        "client_id": plan.principal.client_id,
        "subject_id": subject_id,
        "schema_version": plan.screening.schema_version,
        "screened_at": plan.screening.source.screened_at,
        "received_at": plan.now,
        "fingerprint": plan.fingerprint,
        "data": plan.data,
        "personal_ct": (
            crypto.encrypt_field(
                dek,
                canonical_json(personal),
                table="screenings",
                column="personal_ct",
                row_id=plan.id,
            )
            if personal
            else None
        ),
        "personal_fields": sorted(personal),
    }


#: A subject as a group uses it: its id, its plaintext data key, and whether this group
#: created it.
_SubjectKey = tuple[uuid.UUID, bytes, bool]


async def _subjects(
    session: AsyncSession, settings: Settings, keys: set[tuple[str, str]], now: datetime
) -> dict[tuple[str, str], _SubjectKey]:
    """Each (organisation, case code)'s subject and its data key, created where missing.

    Race-safe (INSERT … ON CONFLICT DO NOTHING): new subjects cost one statement for the
    whole group; existing ones one more, to read their wrapped keys.
    """
    kek = settings.kek_bytes()
    kek_id = crypto.kek_id(kek)
    candidates: dict[tuple[str, str], tuple[dict[str, Any], bytes]] = {}
    for organisation, case_code in sorted(keys):
        subject_id, dek = uuid.uuid4(), crypto.new_dek()
        row = {
            "id": subject_id,
            "organisation": organisation,
            "case_code": case_code,
            "wrapped_dek": crypto.wrap_dek(kek, dek, subject_id),
            "kek_id": kek_id,
            "created_at": now,
        }
        candidates[organisation, case_code] = (row, dek)
    inserted = await insert_new_rows(
        session,
        _SUBJECTS,
        [row for row, _ in candidates.values()],
        unique=("organisation", "case_code"),
    )
    found: dict[tuple[str, str], _SubjectKey] = {
        key: (row["id"], dek, True)
        for key, (row, dek) in candidates.items()
        if row["id"] in inserted
    }
    missing = [key for key in candidates if key not in found]
    if not missing:
        return found
    existing = await session.execute(
        select(_SUBJECTS.c.id, _SUBJECTS.c.organisation, _SUBJECTS.c.case_code)
        .add_columns(_SUBJECTS.c.wrapped_dek, _SUBJECTS.c.kek_id)
        .where(tuple_(_SUBJECTS.c.organisation, _SUBJECTS.c.case_code).in_(missing))
    )
    keks = settings.keks_by_id()
    for stored in existing:
        key = (stored.organisation, stored.case_code)
        if stored.wrapped_dek is None:
            # The subject was erased; a new screening starts a new key, the old data stays
            # gone.
            dek = crypto.new_dek()
            await session.execute(
                update(_SUBJECTS)
                .where(_SUBJECTS.c.id == stored.id)
                .values(
                    wrapped_dek=crypto.wrap_dek(kek, dek, stored.id), kek_id=kek_id, erased_at=None
                )
            )
            found[key] = (stored.id, dek, False)
        else:
            found[key] = (
                stored.id,
                crypto.unwrap_with_any(keks, stored.wrapped_dek, stored.id, stored.kek_id),
                False,
            )
    assert len(found) == len(candidates), "a subject vanished between insert and read"
    return found


async def _drop_unused_subjects(
    session: AsyncSession,
    subjects: dict[tuple[str, str], _SubjectKey],
    stored: Sequence[Plan],
) -> None:
    """Delete the subjects this group created only for screenings it did not store (their
    ids already existed), so a replay or a conflict leaves nothing behind."""
    used = {plan.subject_key for plan in stored}
    unused = [sid for key, (sid, _, new) in subjects.items() if new and key not in used]
    if unused:
        await session.execute(delete(_SUBJECTS).where(_SUBJECTS.c.id.in_(unused)))


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
    committer: GroupCommitter | None = None,
) -> IntakeResult:
    """Take in one screening: decide it, then store it in ``session``'s transaction, or,
    given a ``committer``, in the committer's next group (committed when this returns).
    A replay is answered in ``session``."""
    partners = await cached_directory(
        session, directory_partners, ttl=settings.directory_cache_seconds
    )
    plan = prepare(
        settings,
        principal,
        screening,
        rule_set=rule_set,
        partners=partners,
        now=now,
        batch=batch,
        request_id=request_id,
    )
    if committer is not None:
        # End this session's own transaction first (it may have read the caller's key or
        # the directory): on SQLite it would hold the write lock the group needs, and on
        # PostgreSQL a pooled connection would sit idle while the group is written.
        await session.commit()
        result = await committer.submit(plan)
    else:
        [result] = await write(session, settings, [plan])
    return result if result is not None else await replay(session, plan)


async def _audit_received(session: AsyncSession, plan: Plan, stored: Screening) -> None:
    await audit.record(
        session,
        action=Action.screening_received,
        actor=plan.principal,
        screening_id=stored.id,
        subject_id=stored.subject_id,
        request_id=plan.request_id,
        data={
            "schema_version": stored.schema_version,
            "personal_fields": stored.personal_fields,
            "batch": plan.batch,
        },
    )


async def replay(session: AsyncSession, plan: Plan) -> IntakeResult:
    """Answer a screening whose id is already stored: the original result if the body is
    the same (audited as a replay), else :class:`Conflict`."""
    existing = await session.get(Screening, plan.id, populate_existing=True)
    assert existing is not None, "write() reported an existing id that is not there"
    if existing.organisation != plan.organisation:
        # Another organisation's id: answer as for any conflict, revealing nothing of it.
        raise Conflict("A screening with this id already exists with a different body.")
    if not hmac.compare_digest(existing.fingerprint, plan.fingerprint):
        raise Conflict(
            "A screening with this id already exists with a different body. "
            "Use a new id for a new screening."
        )
    await audit.record(
        session,
        action=Action.screening_replayed,
        actor=plan.principal,
        screening_id=existing.id,
        data={"schema_version": existing.schema_version, "batch": plan.batch},
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
