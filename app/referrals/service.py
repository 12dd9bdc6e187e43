"""The referral lifecycle: from a decision to a partner, and on until it ends.

Everything here runs inside the caller's transaction and only flushes: intake commits a
screening with its decision, referrals, outbox deliveries and audit events together, and the
worker and the status endpoint commit theirs the same way.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app import audit
from app.audit import Action
from app.audit.writer import Actor, actor_of
from app.auth import Principal
from app.db import on_commit
from app.delivery import outbox
from app.errors import Conflict, NotFound, ValidationFailed, field_error
from app.metrics import DECISIONS, RULES_FIRED, child
from app.models import PartnerRow, Referral, ReferralEvent, Screening, Subject
from app.partners.directory import Organisation, Partner, PayloadFormat
from app.partners.matching import MatchResult, SubjectFacts, match
from app.partners.minimiser import (
    OutboundReferral,
    build_referral_body,
    build_revocation_body,
)
from app.partners.service import directory_partners
from app.referrals.state import (
    AWAITING_RESPONSE,
    REVOCABLE,
    PartnerStatus,
    ReferralStatus,
    RejectReason,
    is_terminal,
    partner_may_report,
)
from app.schemas.decision import (
    DecidedReferral,
    Decision,
    LegalBasis,
    Reason,
    ReferralFlag,
    Urgency,
)
from app.schemas.screening import ScreeningIn, ServiceCategory, merge_personal
from app.services.personal import decrypt_personal
from app.settings import Settings

ROUTER = audit.system("referral-router")


def decided_of(row: Referral) -> DecidedReferral:
    """Rebuild the decided referral a row was made from (for fallback and thin details)."""
    known = {f.value for f in ReferralFlag}
    return DecidedReferral(
        service=ServiceCategory(row.service),
        urgency=Urgency(row.urgency),
        legal_basis=LegalBasis(row.legal_basis),
        identifying=row.identifying,
        flags=frozenset(ReferralFlag(f) for f in row.flags if f in known),
        reasons=tuple(Reason.model_validate(r) for r in row.reasons),
    )


async def load_screening(
    session: AsyncSession, settings: Settings, screening_id: uuid.UUID
) -> tuple[Screening, ScreeningIn]:
    """The stored screening, personal fields decrypted (none once the subject is erased)."""
    row = await session.get(Screening, screening_id)
    if row is None:
        raise NotFound("No screening with this id.")
    subject = await session.get(Subject, row.subject_id)
    assert subject is not None
    document = merge_personal(row.data, decrypt_personal(settings, subject, row))
    document["subject"] = {k: v for k, v in document["subject"].items() if k != "age_source"}
    return row, ScreeningIn.model_validate(document)


def _history(
    session: AsyncSession,
    referral: Referral,
    to_status: ReferralStatus,
    *,
    actor: Principal | Actor,
    reason: str | None,
    now: datetime,
) -> str:
    """Move the referral to ``to_status`` and keep the step in its history; returns the
    previous status."""
    previous = referral.status
    referral.status = to_status.value
    referral.updated_at = now
    if is_terminal(to_status):
        referral.closed_at = now
    who = actor_of(actor)
    session.add(
        ReferralEvent(
            referral_id=referral.id,
            from_status=previous,
            to_status=to_status.value,
            reason=reason,
            partner_id=referral.partner_id,
            actor_role=who.role or who.type,
            actor_id=who.id,
            at=now,
        )
    )
    return previous


def _build_body(
    settings: Settings,
    referral_id: uuid.UUID,
    organisation: str,
    decided: DecidedReferral,
    screening: ScreeningIn,
    partner: Partner,
    result: MatchResult,
    document: dict[str, Any] | None = None,
) -> OutboundReferral:
    """The partner's body, built by the minimiser (the only code that builds one)."""
    return build_referral_body(
        referral_id=referral_id,
        partner_id=partner.id,
        decided=decided,
        screening=screening,
        respond_by=result.respond_by,
        flags=result.flags,
        referring_organisation=organisation,
        public_base_url=settings.public_base_url,
        thin=partner.endpoint.thin,
        payload_format=partner.endpoint.format,
        organisation=partner.organisation,
        document=document,
    )


async def _dispatch(
    session: AsyncSession,
    settings: Settings,
    referral: Referral,
    decided: DecidedReferral,
    screening: ScreeningIn,
    partner: Partner,
    result: MatchResult,
    *,
    now: datetime,
    request_id: str | None = None,
) -> OutboundReferral:
    """Build the partner's body with the minimiser and put it in the outbox."""
    outbound = _build_body(
        settings, referral.id, referral.organisation, decided, screening, partner, result
    )
    referral.data_categories = list(outbound.data_categories)
    await outbox.enqueue(
        session,
        settings,
        referral_id=referral.id,
        partner_id=partner.id,
        subject_id=referral.subject_id,
        event_type="referral.created",
        body=outbound.to_bytes(),
        urgency=decided.urgency,
        now=now,
        request_id=request_id,
    )
    return outbound


class _NewRow:
    """A row intake is about to insert, as plain slotted attributes (see
    :class:`NewDecision`); ``row()`` is the column name -> value mapping to insert."""

    __slots__ = ()

    def row(self) -> dict[str, Any]:
        columns: tuple[str, ...] = self.__slots__  # the subclass's fields
        return {name: getattr(self, name) for name in columns}


@dataclass(slots=True)
class NewDecision(_NewRow):
    """A ``decisions`` row intake is about to insert. Plain attributes, not an ORM object:
    building one of those costs about 18 µs (instrumented attributes), this under 1 µs, and
    intake builds four rows per screening. ``tests/referrals/test_service.py`` checks the
    fields are exactly the table's columns."""

    id: uuid.UUID
    screening_id: uuid.UUID
    rule_set_version: str
    rule_set_hash: str
    non_identifying_notification: bool
    trace: dict[str, Any]
    created_at: datetime


@dataclass(slots=True)
class NewReferral(_NewRow):
    """A ``referrals`` row intake is about to insert (see :class:`NewDecision`).
    ``subject_id`` is set when the group's subjects are known (:func:`write_rows`)."""

    id: uuid.UUID
    screening_id: uuid.UUID
    decision_id: uuid.UUID
    subject_id: uuid.UUID | None
    organisation: str
    region: str
    service: str
    urgency: str
    legal_basis: str
    identifying: bool
    flags: list[str]
    reasons: list[dict[str, Any]]
    status: str
    partner_id: str | None
    match: dict[str, Any]
    tried_partner_ids: list[str]
    deadline_at: datetime | None
    data_categories: list[str]
    needs_human: bool
    human_reason: str | None
    assignment: int
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None


@dataclass(slots=True)
class ReferralPlan:
    """What a decision will write, worked out before any SQL: the decision row, each
    decided referral matched to a partner, and each partner's minimised body. The subject
    is not known yet (intake resolves it with the rest of its group); :func:`write_rows`
    fills it in."""

    decision: Decision
    decision_row: NewDecision
    fired: list[str]
    #: One per decided referral: the row, what was decided, the partner's body (None when
    #: held), and the match.
    referrals: list[tuple[NewReferral, DecidedReferral, OutboundReferral | None, MatchResult]]
    partners: Sequence[Partner]

    def partner_names(self) -> dict[str, str]:
        return {p.id: p.name for p in self.partners}


def plan_referrals(
    settings: Settings,
    *,
    screening_id: uuid.UUID,
    organisation: str,
    screening: ScreeningIn,
    decision: Decision,
    partners: Sequence[Partner],
    now: datetime,
    document: dict[str, Any] | None = None,
) -> ReferralPlan:
    """Match each decided referral to a partner and build its body (CPU only, no SQL).

    A referral with no eligible partner is kept as ``held`` and flagged for a person; it is
    never dropped. ``document`` is the screening's JSON dump when the caller has one.
    """
    trace = decision.trace.model_dump(mode="json") if decision.trace is not None else {}
    decision_row = NewDecision(
        id=uuid.uuid4(),
        screening_id=screening_id,
        rule_set_version=str(trace.get("rule_set_version", "")),
        rule_set_hash=str(trace.get("rule_set_hash", "")),
        non_identifying_notification=decision.non_identifying_notification,
        trace=trace,
        created_at=now,
    )
    fired = sorted({f.rule_id for f in (decision.trace.fired if decision.trace else ())})
    by_id = {p.id: p for p in partners}
    facts = SubjectFacts.from_screening(screening, now.date())
    if document is None:
        document = screening.model_dump(mode="json")  # one dump for every partner's body
    planned: list[tuple[NewReferral, DecidedReferral, OutboundReferral | None, MatchResult]] = []
    for decided in decision.referrals:
        result = match(decided, facts, list(partners), now, settings=settings)
        referral_id = uuid.uuid4()
        body = (
            _build_body(
                settings,
                referral_id,
                organisation,
                decided,
                screening,
                by_id[result.partner_id],
                result,
                document,
            )
            if result.matched and result.partner_id is not None
            else None
        )
        referral = NewReferral(
            id=referral_id,
            screening_id=screening_id,
            decision_id=decision_row.id,
            subject_id=None,
            organisation=organisation,
            region=screening.subject.region.value,
            service=decided.service.value,
            urgency=decided.urgency.value,
            legal_basis=decided.legal_basis.value,
            identifying=decided.identifying,
            flags=sorted(f.value for f in result.flags),
            reasons=[r.model_dump(mode="json") for r in decided.reasons],
            status=(ReferralStatus.queued if result.matched else ReferralStatus.held).value,
            partner_id=result.partner_id,
            match=result.model_dump(mode="json"),
            tried_partner_ids=[],
            deadline_at=result.respond_by if result.matched else None,
            data_categories=list(body.data_categories) if body is not None else [],
            needs_human=result.needs_human,
            human_reason=result.unmatched_reason.value if result.unmatched_reason else None,
            assignment=1,
            created_at=now,
            updated_at=now,
            closed_at=None,
        )
        planned.append((referral, decided, body, result))
    return ReferralPlan(
        decision=decision,
        decision_row=decision_row,
        fired=fired,
        referrals=planned,
        partners=partners,
    )


def write_rows(
    plan: ReferralPlan,
    *,
    subject_id: uuid.UUID,
    dek: bytes,
    actor: Principal,
    now: datetime,
    request_id: str | None,
    events: list[dict[str, Any]],
    deliveries: list[dict[str, Any]],
) -> None:
    """Give the planned referrals their subject, and add their first history entries and
    their outbox rows (bodies encrypted under the subject's ``dek``) to ``events`` and
    ``deliveries``: the caller writes a whole group's rows in one INSERT per table."""
    for referral, decided, body, _ in plan.referrals:
        referral.subject_id = subject_id
        events.append(
            {
                "referral_id": referral.id,
                "from_status": None,
                "to_status": referral.status,
                "reason": referral.human_reason,
                "partner_id": referral.partner_id,
                "actor_role": actor.role.value,
                "actor_id": str(actor.client_id),
                "at": now,
            }
        )
        if body is not None:
            assert referral.partner_id is not None
            deliveries.append(
                outbox.delivery_row(
                    dek,
                    referral_id=referral.id,
                    partner_id=referral.partner_id,
                    subject_id=subject_id,
                    event_type="referral.created",
                    body=body.to_bytes(),
                    urgency=decided.urgency,
                    now=now,
                    request_id=request_id,
                )
            )


async def record_decision(
    session: AsyncSession,
    plan: ReferralPlan,
    *,
    screening_id: uuid.UUID,
    subject_id: uuid.UUID,
    actor: Principal,
    request_id: str | None,
) -> None:
    """Audit the decision and each referral (committed with the caller's transaction), and
    count them in the metrics once that transaction has committed."""
    decision_row = plan.decision_row
    await audit.record(
        session,
        action=Action.decision_made,
        actor=actor,
        screening_id=screening_id,
        subject_id=subject_id,
        request_id=request_id,
        data={
            "decision_id": str(decision_row.id),
            "rule_set_version": decision_row.rule_set_version,
            "rule_set_hash": decision_row.rule_set_hash,
            "services": sorted(r.service.value for r in plan.decision.referrals),
            "rules_fired": plan.fired,
        },
    )
    for referral, _, _, _ in plan.referrals:
        await audit.record(
            session,
            action=Action.referral_created,
            actor=actor,
            request_id=request_id,
            screening_id=screening_id,
            referral_id=referral.id,
            partner_id=referral.partner_id,
            subject_id=subject_id,
            data={
                "decision_id": str(decision_row.id),
                "service": referral.service,
                "urgency": referral.urgency,
                "legal_basis": referral.legal_basis,
                "flags": list(referral.flags),
                **({"reason": referral.human_reason} if referral.human_reason else {}),
            },
        )
    # Counted once stored: a group that fails and is written again one screening at a
    # time, or a batch item whose savepoint is rolled back, must not count twice.
    on_commit(session, partial(_count, plan))


def _count(plan: ReferralPlan) -> None:
    for rule_id in plan.fired:
        child(RULES_FIRED, rule_id).inc()
    for decided in plan.decision.referrals:
        child(
            DECISIONS, decided.service.value, decided.urgency.value, decided.legal_basis.value
        ).inc()


async def owns(session: AsyncSession, principal: Principal, referral: Referral) -> bool:
    """A partner client owns the referrals sent to its organisation's partners."""
    if referral.partner_id is None or principal.organisation is None:
        return False
    row = await session.get(PartnerRow, referral.partner_id)
    return row is not None and principal.organisation in (
        row.organisation_id,
        row.organisation_name,
    )


async def get_referral(session: AsyncSession, referral_id: uuid.UUID) -> Referral:
    postgres = session.get_bind().dialect.name == "postgresql"
    referral = await session.get(Referral, referral_id, with_for_update=postgres)
    if referral is None:
        raise NotFound("No referral with this id.")
    return referral


async def report_status(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    referral_id: uuid.UUID,
    status: PartnerStatus,
    reason: RejectReason | None,
    *,
    now: datetime,
) -> Referral:
    """A partner reports on one of its own referrals (FHIR Task status vocabulary)."""
    referral = await get_referral(session, referral_id)
    if not await owns(session, principal, referral):
        # Another partner's referral is indistinguishable from a missing one.
        raise NotFound("No referral with this id.")
    current = ReferralStatus(referral.status)
    if status is PartnerStatus.rejected and reason is None:
        raise ValidationFailed([field_error(("reason",), "a rejection needs a reason", "missing")])
    if status is not PartnerStatus.rejected and reason is not None:
        raise ValidationFailed(
            [field_error(("reason",), "a reason goes with a rejection only", "unexpected")]
        )
    if not partner_may_report(current, status):
        raise Conflict(
            "This status cannot follow the referral's current status.",
            current_status=current.value,
            reported_status=status.value,
        )
    previous = _history(
        session,
        referral,
        ReferralStatus(status.value),
        actor=principal,
        reason=reason.value if reason else None,
        now=now,
    )
    await audit.record(
        session,
        action=Action.referral_status_changed,
        actor=principal,
        referral_id=referral.id,
        partner_id=referral.partner_id,
        screening_id=referral.screening_id,
        data={
            "previous_status": previous,
            "status": status.value,
            **({"reason": reason.value} if reason else {}),
        },
    )
    if status is PartnerStatus.rejected:
        assert reason is not None
        await fall_back(session, settings, referral, reason=f"rejected_{reason.value}", now=now)
    return referral


async def fall_back(
    session: AsyncSession, settings: Settings, referral: Referral, *, reason: str, now: datetime
) -> None:
    """Move the referral to the next eligible partner, or escalate it to a person."""
    await outbox.cancel_pending(session, referral.id, now=now)
    previous_partner = referral.partner_id
    if previous_partner is not None:
        referral.tried_partner_ids = [*referral.tried_partner_ids, previous_partner]
    partners = await directory_partners(session)
    _row, screening = await load_screening(session, settings, referral.screening_id)
    decided = decided_of(referral)
    facts = SubjectFacts.from_screening(screening, now.date())
    result = match(
        decided,
        facts,
        partners,
        now,
        settings=settings,
        exclude=frozenset(referral.tried_partner_ids),
    )
    if not result.matched:
        referral.partner_id = None
        referral.needs_human = True
        referral.human_reason = "no_partner_left"
        referral.deadline_at = None
        _history(session, referral, ReferralStatus.escalated, actor=ROUTER, reason=reason, now=now)
        await audit.record(
            session,
            action=Action.referral_escalated,
            actor=ROUTER,
            referral_id=referral.id,
            screening_id=referral.screening_id,
            partner_id=previous_partner,
            data={
                "reason": "no_partner_left",
                "service": referral.service,
                "urgency": referral.urgency,
                "attempt": referral.assignment,
            },
        )
        return
    partner = next(p for p in partners if p.id == result.partner_id)
    referral.partner_id = partner.id
    referral.assignment += 1
    referral.deadline_at = result.respond_by
    referral.match = result.model_dump(mode="json")
    referral.flags = sorted(f.value for f in result.flags)
    _history(session, referral, ReferralStatus.queued, actor=ROUTER, reason=reason, now=now)
    await _dispatch(session, settings, referral, decided, screening, partner, result, now=now)
    await audit.record(
        session,
        action=Action.referral_fallback,
        actor=ROUTER,
        referral_id=referral.id,
        screening_id=referral.screening_id,
        partner_id=previous_partner,
        data={"reason": reason, "next_partner_id": partner.id, "attempt": referral.assignment},
    )


async def mark_delivered(
    session: AsyncSession,
    referral: Referral,
    *,
    delivery_id: uuid.UUID,
    body_sha256: str,
    attempt: int,
    now: datetime,
) -> None:
    """The partner's endpoint took the referral: record what was disclosed, to whom, why."""
    if referral.status == ReferralStatus.queued.value:
        _history(session, referral, ReferralStatus.delivered, actor=ROUTER, reason=None, now=now)
    await audit.record(
        session,
        action=Action.referral_forwarded,
        actor=audit.system("delivery-worker"),
        referral_id=referral.id,
        screening_id=referral.screening_id,
        partner_id=referral.partner_id,
        data={
            "delivery_id": str(delivery_id),
            "payload_hash": body_sha256,
            "fields_shared": list(referral.data_categories),
            "legal_basis": referral.legal_basis,
            "service": referral.service,
            "attempt": attempt,
        },
    )


async def mark_undeliverable(
    session: AsyncSession, referral: Referral, *, reason: str, now: datetime
) -> None:
    """Retries are exhausted: a dead letter that a person must act on."""
    referral.needs_human = True
    referral.human_reason = reason[:64]
    _history(session, referral, ReferralStatus.undeliverable, actor=ROUTER, reason=reason, now=now)
    await audit.record(
        session,
        action=Action.referral_escalated,
        actor=ROUTER,
        referral_id=referral.id,
        screening_id=referral.screening_id,
        partner_id=referral.partner_id,
        data={
            "reason": reason[:64],
            "service": referral.service,
            "urgency": referral.urgency,
            "attempt": referral.assignment,
        },
    )


async def sweep_deadlines(session: AsyncSession, settings: Settings, *, now: datetime) -> int:
    """Referrals whose partner let the response deadline pass move to the next partner."""
    overdue = (
        (
            await session.execute(
                select(Referral)
                .where(
                    Referral.status.in_([s.value for s in AWAITING_RESPONSE]),
                    Referral.deadline_at.is_not(None),
                    Referral.deadline_at < now,
                )
                .limit(100)
            )
        )
        .scalars()
        .all()
    )
    for referral in overdue:
        await fall_back(session, settings, referral, reason="deadline_missed", now=now)
    return len(overdue)


async def retry_held(session: AsyncSession, settings: Settings, *, now: datetime) -> int:
    """Held referrals (no eligible partner) are matched again as the directory changes."""
    held = (
        (
            await session.execute(
                select(Referral).where(Referral.status == ReferralStatus.held.value).limit(100)
            )
        )
        .scalars()
        .all()
    )
    if not held:
        return 0
    partners = await directory_partners(session)
    routed = 0
    for referral in held:
        _row, screening = await load_screening(session, settings, referral.screening_id)
        decided = decided_of(referral)
        facts = SubjectFacts.from_screening(screening, now.date())
        result = match(decided, facts, partners, now, settings=settings)
        if not result.matched:
            continue
        partner = next(p for p in partners if p.id == result.partner_id)
        referral.partner_id = partner.id
        referral.needs_human = False
        referral.human_reason = None
        referral.deadline_at = result.respond_by
        referral.match = result.model_dump(mode="json")
        referral.flags = sorted(f.value for f in result.flags)
        _history(
            session,
            referral,
            ReferralStatus.queued,
            actor=ROUTER,
            reason="partner_found",
            now=now,
        )
        await _dispatch(session, settings, referral, decided, screening, partner, result, now=now)
        await audit.record(
            session,
            action=Action.referral_fallback,
            actor=ROUTER,
            referral_id=referral.id,
            screening_id=referral.screening_id,
            data={"reason": "partner_found", "next_partner_id": partner.id, "attempt": 1},
        )
        routed += 1
    return routed


def _child_protection(referral: Referral) -> bool:
    return (
        referral.service == ServiceCategory.protection.value
        and referral.legal_basis == LegalBasis.child_protection_duty.value
    )


async def withdraw_consent(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    screening_id: uuid.UUID,
    *,
    now: datetime,
) -> list[Referral]:
    """Revoke the screening's pending referrals and tell their partners; a child's
    protection referral is not revoked."""
    referrals = (
        (await session.execute(select(Referral).where(Referral.screening_id == screening_id)))
        .scalars()
        .all()
    )
    revoked: list[Referral] = []
    for referral in referrals:
        if ReferralStatus(referral.status) not in REVOCABLE or _child_protection(referral):
            continue
        partner_id = referral.partner_id
        await outbox.cancel_pending(session, referral.id, now=now)
        previous = _history(
            session,
            referral,
            ReferralStatus.revoked,
            actor=principal,
            reason="consent_withdrawn",
            now=now,
        )
        if partner_id is not None and referral.data_categories:
            row = await session.get(PartnerRow, partner_id)
            await outbox.enqueue(
                session,
                settings,
                referral_id=referral.id,
                partner_id=partner_id,
                subject_id=referral.subject_id,
                event_type="referral.revoked",
                body=build_revocation_body(
                    referral_id=referral.id,
                    partner_id=partner_id,
                    payload_format=PayloadFormat(row.payload_format)
                    if row is not None
                    else PayloadFormat.ruta_json,
                    organisation=Organisation(id=row.organisation_id, name=row.organisation_name)
                    if row is not None
                    else None,
                    public_base_url=settings.public_base_url,
                ),
                urgency=Urgency(referral.urgency),
                now=now,
            )
        await audit.record(
            session,
            action=Action.referral_revoked,
            actor=principal,
            referral_id=referral.id,
            screening_id=screening_id,
            partner_id=partner_id,
            data={
                "reason": "consent_withdrawn",
                "service": referral.service,
                "previous_status": previous,
            },
        )
        revoked.append(referral)
    await audit.record(
        session,
        action=Action.consent_withdrawn,
        actor=principal,
        screening_id=screening_id,
        data={"count": len(revoked)},
    )
    return revoked
