"""What partners receive: the bodies Ruta signs and posts to a partner's endpoint, and the
body a thin-mode partner fetches (docs/partners.md).

These models describe what :mod:`app.partners.minimiser` builds; they do not build it. The
OpenAPI document publishes them as the ``webhooks`` (app/openapi.py) and as the details
response, and tests/schemas/test_webhooks.py validates real bodies against them. Unknown
fields are refused (``extra="forbid"``), so a field the minimiser starts to send without a
schema fails that test.

A field that is absent means *not asked or not known*, as in the screening.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.decision import LegalBasis, ReferralFlag, Urgency
from app.schemas.outcome import Timestamp
from app.schemas.screening import (
    AgeBand,
    ControlMethod,
    ExploitationType,
    InjurySeverity,
    Language,
    MigrationStatus,
    Need,
    Recruitment,
    Region,
    SafeChannel,
    Sector,
    ServiceCategory,
    Sex,
    Suicidality,
)

#: ``{locale: text}``, at least ``es`` and ``en``.
Localised = Annotated[dict[str, str], Field(description="Text by locale: at least es and en.")]
Url = Annotated[str, Field(json_schema_extra={"format": "uri"})]


class Sent(BaseModel):
    """A part of an outbound body: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


# --- the minimised screening -------------------------------------------------------------
# One field per screening path that app/partners/policy.yaml lets leave (the safe contact
# travels in ``contact_instructions`` instead). tests/schemas/test_webhooks.py checks that
# these are exactly the policy's paths.


class SharedContact(Sent):
    """Identifying: only on an identifying referral, and never a phone someone else
    controls."""

    phone: str | None = None
    email: str | None = None
    address: str | None = None


class SharedSubject(Sent):
    name: str | None = Field(default=None, description="Identifying.")
    date_of_birth: str | None = Field(
        default=None, description="Identifying.", json_schema_extra={"format": "date"}
    )
    contact: SharedContact | None = None
    age: int | None = None
    age_band: AgeBand | None = None
    age_estimated: bool | None = None
    age_disputed: bool | None = None
    minority_signs: bool | None = None
    sex: Sex | None = None
    nationality: str | None = Field(default=None, description="ISO 3166-1 alpha-2.")
    preferred_language: Language | None = None
    speaks_spanish: bool | None = None
    needs_interpreter: bool | None = None
    region: Region | None = None
    ubigeo: str | None = None
    unaccompanied_minor: bool | None = None
    separated_child: bool | None = None
    caregiver_present: bool | None = None
    caregiver_suspected: bool | None = None


class SharedSafety(Sent):
    immediate_danger: bool | None = None
    trafficker_nearby: bool | None = None
    can_return_safely: bool | None = None
    threats: bool | None = None
    phone_controlled: bool | None = None


class SharedIndicators(Sent):
    exploitation_types: list[ExploitationType] | None = None
    control_methods: list[ControlMethod] | None = None
    recruitment: list[Recruitment] | None = None
    sectors: list[Sector] | None = None


class SharedHealth(Sent):
    """Medical referrals only."""

    injury_severity: InjurySeverity | None = None
    hours_since_sexual_violence: float | None = None
    pregnant: bool | None = None
    sti_symptoms: bool | None = None
    febrile_illness: bool | None = None
    mining_exposure: bool | None = None
    medical_care_withheld: bool | None = None


class SharedMentalHealth(Sent):
    """Psychological referrals only."""

    suicidal: Suicidality | None = None
    acute_distress: bool | None = None
    psychosis_signs: bool | None = None
    positive_screen: bool | None = None


class SharedLegal(Sent):
    """Legal and protection referrals; never ``migration_status`` to law enforcement."""

    has_documents: bool | None = None
    documents_withheld: bool | None = None
    migration_status: MigrationStatus | None = None
    wants_police_report: bool | None = None
    unpaid_wages: bool | None = None


class SharedScreening(Sent):
    """The screening fields this partner's service may receive (need to know). Notes, the
    case code, the screener, the site and the consent record are never sent."""

    subject: SharedSubject | None = None
    safety: SharedSafety | None = None
    indicators: SharedIndicators | None = None
    health: SharedHealth | None = None
    mental_health: SharedMentalHealth | None = None
    legal: SharedLegal | None = None
    needs_expressed: list[Need] | None = None


# --- referral bodies ---------------------------------------------------------------------


class ReferralReason(Sent):
    rule_id: str
    guideline: str = Field(description="The guideline or law the rule cites.")
    text: Localised


class ThinReferral(Sent):
    id: UUID
    partner_id: str
    service: ServiceCategory
    urgency: Urgency
    respond_by: Timestamp = Field(description="Answer at least `received` by then.")
    status_url: Url = Field(description="POST your statuses here.")
    details_url: Url = Field(description="GET the details here, with your partner key.")
    consent_withdrawn: Literal[True] | None = Field(
        default=None,
        description="Present when the person withdrew consent and the referral stands on "
        "child-protection duty or vital interest.",
    )


class SentReferral(Sent):
    id: UUID
    partner_id: str
    service: ServiceCategory
    urgency: Urgency
    respond_by: Timestamp = Field(description="Answer at least `received` by then.")
    status_url: Url = Field(description="POST your statuses here.")
    consent_withdrawn: Literal[True] | None = Field(
        default=None,
        description="Present when the person withdrew consent and the referral stands on "
        "child-protection duty or vital interest.",
    )
    legal_basis: LegalBasis
    identifying: bool = Field(description="Whether identity and contact data may be sent.")
    flags: list[ReferralFlag] = Field(description="Instructions: follow them.")
    reasons: list[ReferralReason]
    referring_organisation: str


class ContactInstructions(Sent):
    """Safety-critical: follow them exactly (docs/partners.md)."""

    phone_controlled: bool = Field(description="Never call or message the person's phone.")
    do_not_contact_caregiver: bool
    channel: SafeChannel | None = None
    safe_times: str | None = None
    code_word: str | None = Field(default=None, description="Identify yourself with it.")
    number_or_handle: str | None = Field(default=None, description="Identifying.")
    contact_through_referrer: bool
    instructions: list[Localised]


class _FullBody(Sent):
    format: Literal["ruta-json/1"]
    thin: Literal[False]
    referral: SentReferral
    contact_instructions: ContactInstructions
    screening: SharedScreening
    data_categories: list[str] = Field(description="The data categories this body holds.")


class ReferralCreated(_FullBody):
    """A new referral, with the minimised data your service needs."""

    type: Literal["referral.created"]


class ReferralCreatedThin(Sent):
    """A new referral in thin mode: ids and links only; fetch the details."""

    type: Literal["referral.created"]
    format: Literal["ruta-json/1"]
    thin: Literal[True]
    referral: ThinReferral


class ReferralDetails(_FullBody):
    """What ``GET /v1/referrals/{id}/details`` answers a ``ruta-json`` partner."""

    type: Literal["referral.details"]


# --- notices and notifications -----------------------------------------------------------


class RevokedReferral(Sent):
    id: UUID
    partner_id: str
    reason: Literal["consent_withdrawn"]
    stands: Literal[False]
    instruction: Localised


class StandingReferralNotice(Sent):
    id: UUID
    partner_id: str
    reason: Literal["consent_withdrawn"]
    stands: Literal[True]
    legal_basis: Literal["child_protection_duty", "vital_interest"]
    instruction: Localised


class ReferralRevoked(Sent):
    """The person withdrew consent and the referral rested on it: stop, and delete what
    you received. Its details answer 410 from now on."""

    type: Literal["referral.revoked"]
    format: Literal["ruta-json/1"]
    referral: RevokedReferral


class ReferralConsentWithdrawn(Sent):
    """The person withdrew consent, but the referral stands on child-protection duty or
    vital interest: continue, for that purpose only."""

    type: Literal["referral.consent_withdrawn"]
    format: Literal["ruta-json/1"]
    referral: StandingReferralNotice


class NotificationInfo(Sent):
    id: UUID = Field(description="This notification's id; it links to nothing else.")
    reason: Literal["adult_declined_consent"]
    month: str = Field(pattern=r"^[0-9]{4}-[0-9]{2}$", description="YYYY-MM.")
    referring_organisation: str


class NotifiedCase(Sent):
    """Statistics that cannot single the person out."""

    region: Region
    age_band: AgeBand | None
    sex: Sex
    exploitation_types: list[ExploitationType]
    control_methods: list[ControlMethod]
    recruitment: list[Recruitment]
    sectors: list[Sector]


class NotificationCreated(Sent):
    """A non-identifying notification (role `notification_recipient` only)."""

    type: Literal["notification.created"]
    format: Literal["ruta-json/1"]
    notification: NotificationInfo
    case: NotifiedCase


# --- FHIR ---------------------------------------------------------------------------------


class FhirResource(BaseModel):
    """A FHIR R4 resource (Task, ServiceRequest or Patient); see the FHIR R4 specification
    for its elements and docs/partners.md for how Ruta fills them."""

    model_config = ConfigDict(extra="allow")

    resourceType: Literal["Task", "ServiceRequest", "Patient"]  # noqa: N815 - FHIR's name


class FhirEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fullUrl: str  # noqa: N815 - FHIR's name
    resource: FhirResource


class FhirCoding(BaseModel):
    model_config = ConfigDict(extra="forbid")

    system: str
    code: str


class FhirMeta(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tag: list[FhirCoding] = Field(
        description="The event (`<Ruta base URL>/fhir/CodeSystem/event`): referral.created, "
        "referral.details, referral.revoked or referral.consent_withdrawn."
    )


class FhirBundle(BaseModel):
    """The ``fhir-r4`` rendering of the same minimised body: a FHIR R4 Bundle of type
    ``collection`` (Task, ServiceRequest, Patient; a notice holds the Task only), sent as
    ``application/fhir+json; fhirVersion=4.0``."""

    model_config = ConfigDict(extra="forbid")

    resourceType: Literal["Bundle"]  # noqa: N815 - FHIR's name
    meta: FhirMeta
    type: Literal["collection"]
    entry: list[FhirEntry]


#: The ``ruta-json`` body models by ``type`` (``referral.created`` is two: full and thin).
_MODELS: dict[str, type[BaseModel]] = {
    "referral.details": ReferralDetails,
    "referral.revoked": ReferralRevoked,
    "referral.consent_withdrawn": ReferralConsentWithdrawn,
    "notification.created": NotificationCreated,
}


def model_for(body: dict[str, Any]) -> type[BaseModel]:
    """The model a ``ruta-json`` body claims to be (by ``type`` and ``thin``)."""
    if body.get("type") == "referral.created":
        return ReferralCreatedThin if body.get("thin") else ReferralCreated
    return _MODELS[str(body.get("type"))]


class FhirDesignation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    language: str
    value: str


class FhirConcept(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str
    display: str | None = None
    definition: str | None = None
    designation: list[FhirDesignation] | None = None


class FhirCodeSystem(BaseModel):
    """A FHIR R4 CodeSystem: one of Ruta's vocabularies that fhir-r4 bodies cite."""

    model_config = ConfigDict(extra="forbid")

    resourceType: Literal["CodeSystem"]  # noqa: N815 - FHIR's name
    id: str
    url: Url
    version: str
    name: str
    title: str
    status: Literal["active"]
    experimental: bool
    publisher: str
    description: str
    caseSensitive: bool  # noqa: N815 - FHIR's name
    content: Literal["complete"]
    count: int
    concept: list[FhirConcept]
