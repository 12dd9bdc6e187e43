"""What a screening's POST answers: the full receipt, or on ``Prefer: return=minimal``
(RFC 7240) the minimal one.

A full receipt carries the decision with its rules trace (every rule that fired and the
values it read) and every reason in every language: about 13.5 KB for a typical screening,
most of it the trace. A clinic on a slow link usually needs only what to tell the person
now: which services, how urgent, on what legal basis, which partner and by when, and why,
in the person's language. The minimal receipt is that, with the path of the full receipt
(``href``), which stays one ``GET /v1/screenings/{id}`` away.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Principal
from app.i18n import DEFAULT_LOCALE
from app.models import Screening
from app.referrals.views import decision_view
from app.schemas.outcome import (
    BatchResult,
    DecisionView,
    MinimalReceipt,
    MinimalReferral,
    ScreeningDetail,
    ScreeningReceipt,
    receipt_json,
)
from app.services.intake import IntakeResult, get_screening_for

#: The ``Preference-Applied`` value (and the preference honoured).
RETURN_MINIMAL = "return=minimal"


def prefers_minimal(prefer: str | None) -> bool:
    """Whether a ``Prefer`` header asks for ``return=minimal``. Preferences are comma
    separated, names case-insensitive, values optionally quoted, parameters after ``;``
    ignored; of several ``return`` preferences the first counts (RFC 7240, section 2)."""
    if not prefer:
        return False
    for preference in prefer.split(","):
        name, _, value = preference.split(";", 1)[0].partition("=")
        if name.strip().lower() == "return":
            return value.strip().strip('"').lower() == "minimal"
    return False


def screening_href(screening_id: uuid.UUID) -> str:
    return f"/v1/screenings/{screening_id}"


def minimal_receipt(
    screening_id: uuid.UUID,
    *,
    replayed: bool,
    decision: Mapping[str, Any] | None,
    locale: str,
) -> MinimalReceipt:
    """The minimal receipt of a screening whose decision (as the API shows it, see
    ``app.referrals.views.decision_dict``) is ``decision``, reasons in ``locale``."""
    status: Literal["received", "decided"] = "decided" if decision is not None else "received"
    return MinimalReceipt(
        id=screening_id,
        href=screening_href(screening_id),
        status=status,
        replayed=replayed,
        language=locale,
        non_identifying_notification=bool(decision and decision["non_identifying_notification"]),
        referrals=[_referral(r, locale) for r in decision["referrals"]] if decision else [],
    )


def _referral(referral: Mapping[str, Any], locale: str) -> MinimalReferral:
    return MinimalReferral(
        id=referral["id"],
        service=referral["service"],
        recipient=referral["recipient"],
        urgency=referral["urgency"],
        legal_basis=referral["legal_basis"],
        status=referral["status"],
        partner=referral["partner"],
        respond_by=_to_the_second(referral["respond_by"]),
        needs_human=referral["needs_human"],
        reasons=[_text(reason["text"], locale) for reason in referral["reasons"]],
    )


def _to_the_second(moment: str | None) -> str | None:
    """``2026-11-21T14:52:10.120000+00:00`` as ``2026-11-21T14:52:10Z`` (a deadline to the
    second, a fraction earlier than stored, never later)."""
    if moment is None:
        return None
    parsed = datetime.fromisoformat(moment).astimezone(UTC).replace(microsecond=0)
    return parsed.isoformat().replace("+00:00", "Z")


def _text(text: Mapping[str, str], locale: str) -> str:
    return text.get(locale) or text.get(DEFAULT_LOCALE) or next(iter(text.values()), "")


def minimal_json(receipt: MinimalReceipt) -> bytes:
    """The minimal receipt as sent: a field at its default (``null``, ``false``) is left
    out (the schema states each default)."""
    return receipt.model_dump_json(exclude_defaults=True).encode()


def batch_json(result: BatchResult) -> bytes:
    """A batch's answer as sent; its minimal receipts leave out fields at their default, as
    :func:`minimal_json` does (the rest of the answer keeps its ``null`` fields)."""
    document = result.model_dump(mode="json")
    for item, dumped in zip(result.results, document["results"], strict=True):
        if isinstance(item.receipt, MinimalReceipt):
            dumped["receipt"] = item.receipt.model_dump(mode="json", exclude_defaults=True)
    return orjson.dumps(document)


async def minimal_of(session: AsyncSession, result: IntakeResult, locale: str) -> MinimalReceipt:
    """The minimal receipt of what intake answered (the decision read back on a replay)."""
    decision = result.decision
    if decision is None:
        decision = await decision_view(session, result.screening.id)
    return minimal_receipt(
        result.screening.id, replayed=not result.created, decision=decision, locale=locale
    )


async def receipt(
    session: AsyncSession,
    screening: Screening,
    *,
    replayed: bool,
    decision: dict[str, Any] | None = None,
) -> ScreeningReceipt:
    """The full receipt; ``decision`` when the caller just built it, else read back."""
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


async def item_receipt(
    session: AsyncSession, result: IntakeResult, *, minimal: bool, locale: str
) -> ScreeningReceipt | MinimalReceipt:
    """A batch item's receipt: minimal when the batch asked for it, else full."""
    if minimal:
        return await minimal_of(session, result, locale)
    return await receipt(
        session, result.screening, replayed=not result.created, decision=result.decision
    )


async def answer_json(
    session: AsyncSession, result: IntakeResult, *, minimal: bool, locale: str
) -> bytes:
    """The body of a single screening's POST answer: the minimal receipt, or the full one
    (written straight from what intake holds when it has just decided, see
    ``receipt_json``; serialised once, not dumped and validated again by FastAPI)."""
    if minimal:
        return minimal_json(await minimal_of(session, result, locale))
    row = result.screening
    if result.decision is not None:
        return receipt_json(
            id=row.id,
            organisation=row.organisation,
            status="decided",
            schema_version=row.schema_version,
            screened_at=row.screened_at,
            received_at=row.received_at,
            replayed=not result.created,
            decision=result.decision,
        )
    answer = await receipt(session, row, replayed=not result.created)
    return answer.model_dump_json().encode()


async def screening_detail(
    session: AsyncSession, principal: Principal, screening_id: uuid.UUID
) -> ScreeningDetail:
    """``GET /v1/screenings/{id}``: the clinic's own screening (without its personal
    fields: their paths only) and its decision as it stands."""
    screening = await get_screening_for(session, principal, screening_id)
    base = await receipt(session, screening, replayed=False)
    return ScreeningDetail(
        **base.model_dump(),
        screening=screening.data,
        personal_fields=list(screening.personal_fields),
    )
