"""What the API returns about a screening."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import orjson
from pydantic import BaseModel, ConfigDict, Field

from app.referrals.state import ReferralStatus
from app.schemas.decision import LegalBasis, Reason, Recipient, ReferralFlag, Trace, Urgency
from app.schemas.examples import BATCH_IN
from app.schemas.screening import ServiceCategory

#: A timestamp the API has already rendered as RFC 3339 text (kept as stored).
Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


class PartnerRef(BaseModel):
    id: str
    name: str


class RuleSetRef(BaseModel):
    """The rule set a decision was made with."""

    version: str
    sha256: str = Field(description="sha256 of the rule file's bytes, hex.")


class ReferralView(BaseModel):
    """A referral as clinics and auditors see it (no personal data): what
    ``app.referrals.views.referral_view`` writes, field for field."""

    id: UUID
    service: ServiceCategory
    recipient: Recipient = Field(
        description="Which kind of partner may take it: `provider` (an ordinary provider), "
        "`child_protection_authority`, `shelter` (a child's additional protection referral) or "
        "`law_enforcement` (only with the person's law_enforcement consent)."
    )
    urgency: Urgency
    legal_basis: LegalBasis
    identifying: bool = Field(description="May identifying fields leave for this referral?")
    flags: list[ReferralFlag] = Field(description="Instructions that travel with it.")
    status: ReferralStatus = Field(
        description="Ruta's states (queued, held, delivered, escalated, revoked, "
        "undeliverable) and the FHIR Task statuses partners report."
    )
    partner: PartnerRef | None = Field(description="The partner holding it now, if any.")
    respond_by: Timestamp | None = Field(description="The partner's response deadline.")
    needs_human: bool = Field(description="No partner is left or delivery failed: escalated.")
    human_reason: str | None
    data_categories: list[str] = Field(description="What the partner receives (need to know).")
    reasons: list[Reason] = Field(
        description="Each rule's reason, in Spanish and English, with the guideline it cites."
    )


class DecisionView(BaseModel):
    """The decision on a screening as the API shows it: what
    ``app.referrals.views.decision_dict`` writes, field for field."""

    id: UUID
    rule_set: RuleSetRef
    non_identifying_notification: bool = Field(
        description="An adult declined consent: only a non-identifying notification is sent."
    )
    notification_recipient: str | None = Field(
        description="The partner id the non-identifying notification goes to, if any."
    )
    referrals: list[ReferralView] = Field(
        description="At most one per (service, recipient), protection first."
    )
    trace: Trace = Field(description="Every rule that fired and the values it read.")


class ScreeningReceipt(BaseModel):
    id: UUID
    organisation: str
    status: Literal["received", "decided"]
    schema_version: str
    screened_at: datetime
    received_at: datetime
    replayed: bool = Field(
        default=False, description="True when this answer is a replay of an earlier POST."
    )
    decision: DecisionView | None = Field(
        default=None, description="The referral decision, once the rules engine has run."
    )


def receipt_json(
    *,
    id: UUID,
    organisation: str,
    status: Literal["received", "decided"],
    schema_version: str,
    screened_at: datetime,
    received_at: datetime,
    replayed: bool,
    decision: dict[str, Any] | None,
) -> bytes:
    """``ScreeningReceipt(...).model_dump_json()``, byte for byte, without building the model.

    Intake answers every screening with a receipt whose decision carries the rules trace
    (about 9 KB), and validating and dumping that as ``dict[str, Any]`` cost about 12 µs
    more than writing it with orjson. A value orjson cannot write falls back to the model.
    ``tests/schemas/test_outcome.py`` checks the two agree.
    """
    fields: dict[str, Any] = {
        "id": id,
        "organisation": organisation,
        "status": status,
        "schema_version": schema_version,
        "screened_at": screened_at,
        "received_at": received_at,
        "replayed": replayed,
        "decision": decision,
    }
    try:
        return orjson.dumps(fields, option=orjson.OPT_UTC_Z)
    except TypeError:
        return ScreeningReceipt.model_validate(fields).model_dump_json().encode()


class ScreeningDetail(ScreeningReceipt):
    screening: dict[str, Any] = Field(
        description="The stored screening without personal fields (see `personal_fields`)."
    )
    personal_fields: list[str] = Field(
        description="Personal fields held encrypted for this screening (paths, not values)."
    )


class MinimalReferral(BaseModel):
    """A referral in a minimal receipt: what a clinic tells the person now."""

    id: UUID
    service: ServiceCategory
    recipient: Recipient
    urgency: Urgency
    legal_basis: LegalBasis
    status: ReferralStatus
    partner: PartnerRef | None = Field(
        default=None, description="The partner holding it now; absent while none has it."
    )
    respond_by: Timestamp | None = Field(
        default=None,
        description="The partner's response deadline, to the second; absent without a partner.",
    )
    needs_human: bool = Field(
        default=False,
        description="Present (true) only when no partner is left or delivery failed: a "
        "coordinator takes it over.",
    )
    reasons: list[str] = Field(
        description="Each rule's reason, in the receipt's `language` only (the full receipt "
        "has every language and the guideline each reason cites)."
    )


class MinimalReceipt(BaseModel):
    """The answer to ``Prefer: return=minimal`` (RFC 7240): the decision without its rules
    trace, each reason in one language, and a field at its default (``null``, ``false``)
    left out. ``href`` is the full receipt, one GET away."""

    model_config = ConfigDict(extra="forbid")

    id: UUID = Field(description="The screening's id.")
    href: str = Field(description="The full screening and decision: `GET` this path.")
    status: Literal["received", "decided"]
    replayed: bool = Field(description="True when this answer is a replay of an earlier POST.")
    language: str = Field(description="The language of `reasons` (also `Content-Language`).")
    non_identifying_notification: bool = Field(
        default=False,
        description="Present (true) only when an adult declined consent: only a "
        "non-identifying notification is sent.",
    )
    referrals: list[MinimalReferral] = Field(
        description="At most one per (service, recipient), protection first; empty until decided."
    )


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [BATCH_IN]})

    screenings: list[dict[str, Any]] = Field(
        description="Screenings collected offline, each with its original screened_at."
    )


class BatchItemResult(BaseModel):
    index: int
    id: str | None
    #: ``error``: the database refused this item (500); the others are kept.
    status: Literal["created", "replayed", "conflict", "invalid", "forbidden", "error"]
    http_status: int
    receipt: ScreeningReceipt | MinimalReceipt | None = Field(
        default=None,
        description="The item's receipt: minimal (`MinimalReceipt`) when the batch was "
        "posted with `Prefer: return=minimal`, else full.",
    )
    problem: dict[str, Any] | None = None


class BatchResult(BaseModel):
    created: int
    replayed: int
    failed: int
    results: list[BatchItemResult]
