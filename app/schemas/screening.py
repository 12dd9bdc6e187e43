"""The screening a clinic posts: schema version 1.

Vocabularies draw on UN Migration's HTCDS value lists, the TVIT/AHTST screening domains and
the inter-agency referral form. ``None`` means *not asked or not known*; the rules engine
forces every rule to say what it does with an unknown value.

Fields marked ``personal`` in their description are encrypted at rest and never appear in
logs, error bodies, audit events or metrics.
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, get_args, get_origin
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    WithJsonSchema,
    field_validator,
    model_serializer,
    model_validator,
)

SCHEMA_VERSION: Literal["1"] = "1"


class Strict(BaseModel):
    """Unknown fields are rejected everywhere: a misspelt field must never be ignored.

    A model with a set field must derive from :class:`SortedSets` (defining one that does
    not raises ``TypeError``), so that its sets serialise sorted.
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)

    #: The fields that hold a frozenset (filled for each subclass).
    set_fields: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        sets = tuple(name for name, f in cls.model_fields.items() if _holds_set(f.annotation))
        if sets and not issubclass(cls, SortedSets):
            raise TypeError(
                f"{cls.__name__} has set fields {sets}: derive it from SortedSets so they "
                "serialise sorted"
            )
        cls.set_fields = sets

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        """NUL characters are refused: PostgreSQL cannot store them in text or JSON."""
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value


class SortedSets(Strict):
    """A :class:`Strict` model whose sets serialise sorted, so equal screenings have
    byte-equal canonical JSON (their fingerprints match, and a replay is recognised).

    Only models with set fields take this serializer: a wrap serializer is a Python call
    for every instance dumped, and a screening holds a dozen nested models.

    The serializer returns a plain dict, so pydantic would describe every such model's
    output as a free-form object (and FastAPI would publish it as a second, untyped
    ``…-Output`` component). What it writes is the model's own shape with sets sorted, so
    the serializer declares no return type: pydantic then describes the output by the
    model's fields, and the document has one typed component per model.
    """

    @model_serializer(mode="wrap")
    def _sorted_sets(self, handler: SerializerFunctionWrapHandler):  # type: ignore[no-untyped-def]
        data: dict[str, Any] = handler(self)
        for name in self.set_fields:
            if name in data and isinstance(getattr(self, name), frozenset):
                data[name] = sorted(data[name])
        return data


def _holds_set(annotation: Any) -> bool:
    if annotation is frozenset or get_origin(annotation) in (frozenset, set):
        return True
    return any(_holds_set(arg) for arg in get_args(annotation))


class ServiceCategory(StrEnum):
    medical = "medical"
    psychological = "psychological"
    legal = "legal"
    protection = "protection"


class ConsentScope(StrEnum):
    medical = "medical"
    psychological = "psychological"
    legal = "legal"
    protection = "protection"
    law_enforcement = "law_enforcement"


class Sex(StrEnum):
    female = "female"
    male = "male"
    intersex = "intersex"
    unknown = "unknown"


class AgeBand(StrEnum):
    """Age bands for when the exact age is not known. Bands below 18 are minors."""

    b0_11 = "0-11"
    b12_14 = "12-14"
    b15_17 = "15-17"
    b18_24 = "18-24"
    b25_34 = "25-34"
    b35_49 = "35-49"
    b50_plus = "50+"


MINOR_AGE_BANDS = frozenset({AgeBand.b0_11, AgeBand.b12_14, AgeBand.b15_17})
#: Each band's ages, both ends included.
AGE_BAND_RANGES: dict[AgeBand, tuple[int, int]] = {
    AgeBand.b0_11: (0, 11),
    AgeBand.b12_14: (12, 14),
    AgeBand.b15_17: (15, 17),
    AgeBand.b18_24: (18, 24),
    AgeBand.b25_34: (25, 34),
    AgeBand.b35_49: (35, 49),
    AgeBand.b50_plus: (50, 120),
}


class Region(StrEnum):
    """Peru's 24 departments plus the Constitutional Province of Callao (ubigeo order)."""

    amazonas = "amazonas"
    ancash = "ancash"
    apurimac = "apurimac"
    arequipa = "arequipa"
    ayacucho = "ayacucho"
    cajamarca = "cajamarca"
    callao = "callao"
    cusco = "cusco"
    huancavelica = "huancavelica"
    huanuco = "huanuco"
    ica = "ica"
    junin = "junin"
    la_libertad = "la_libertad"
    lambayeque = "lambayeque"
    lima = "lima"
    loreto = "loreto"
    madre_de_dios = "madre_de_dios"
    moquegua = "moquegua"
    pasco = "pasco"
    piura = "piura"
    puno = "puno"
    san_martin = "san_martin"
    tacna = "tacna"
    tumbes = "tumbes"
    ucayali = "ucayali"


#: INEI ubigeo department codes (first two digits of a six-digit ubigeo).
UBIGEO_DEPARTMENTS: dict[str, Region] = {f"{i + 1:02d}": region for i, region in enumerate(Region)}


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    ascii_only = "".join(c for c in decomposed if not unicodedata.combining(c))
    return ascii_only.strip().lower().replace(" ", "_").replace("-", "_")


def parse_region(value: str) -> Region:
    """Accept a region name (any case, with or without accents) or an ubigeo code."""
    text = value.strip()
    if text.isdigit() and len(text) in (2, 4, 6):
        try:
            return UBIGEO_DEPARTMENTS[text[:2]]
        except KeyError:
            raise ValueError("unknown ubigeo department code") from None
    folded = _fold(text)
    if folded.startswith("region_"):
        folded = folded.removeprefix("region_")
    try:
        return Region(folded)
    except ValueError:
        raise ValueError("not a region of Peru: use a department name or an ubigeo code") from None


#: Spanish names as people write them (any case and accents are accepted too).
_REGION_NAMES = {
    Region.apurimac: "Apurímac",
    Region.huanuco: "Huánuco",
    Region.junin: "Junín",
    Region.san_martin: "San Martín",
    Region.madre_de_dios: "Madre de Dios",
}

#: What ``subject.region`` accepts, as JSON Schema: the stored value, the region's name, or a
#: 2-, 4- or 6-digit ubigeo code. (The response schema shows the stored value only.)
REGION_INPUT_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "enum": [r.value for r in Region], "title": "Region"},
        {
            "type": "string",
            "enum": [_REGION_NAMES.get(r, r.value.replace("_", " ").title()) for r in Region],
            "title": "Region name",
        },
        {
            "type": "string",
            "pattern": "^(0[1-9]|1[0-9]|2[0-5])([0-9]{2}){0,2}$",
            "title": "Ubigeo code",
            "description": "Department (2 digits), province (4) or district (6).",
        },
    ]
}


class Language(StrEnum):
    """ISO 639 codes of the languages Ruta's partners are matched on."""

    es = "es"  # Spanish
    qu = "qu"  # Quechua
    ay = "ay"  # Aymara
    cni = "cni"  # Asháninka
    ame = "ame"  # Yanesha
    agr = "agr"  # Awajún
    shp = "shp"  # Shipibo-Konibo
    en = "en"
    pt = "pt"
    other = "other"


INDIGENOUS_LANGUAGES = frozenset(
    {Language.qu, Language.ay, Language.cni, Language.ame, Language.agr, Language.shp}
)


class ToolName(StrEnum):
    tvit = "tvit"
    ahtst = "ahtst"
    iom_screening_form = "iom_screening_form"
    ruta_form = "ruta_form"
    other = "other"


class Tool(Strict):
    name: ToolName
    version: str = Field(min_length=1, max_length=32)


def aware_utc(value: datetime) -> datetime:
    """``value`` in UTC; a ``ValueError`` (so a 422 naming the field) for a naive value, or
    for one that UTC cannot represent: ``0001-01-01T00:00:00+14:00`` is in year 0 in UTC, and
    ``datetime.astimezone`` raises ``OverflowError``, which pydantic would let through."""
    if value.tzinfo is None:
        raise ValueError("must include a timezone offset, e.g. 2026-11-20T14:05:00-05:00")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(OUT_OF_RANGE) from None


OUT_OF_RANGE = "is out of range: in UTC it must fall between the years 1 and 9999"

#: A client's timestamp: with an offset, representable in UTC, and stored as UTC.
AwareDatetime = Annotated[datetime, AfterValidator(aware_utc)]
ShortText = Annotated[str, Field(min_length=1, max_length=200)]


class Source(Strict):
    organisation: ShortText | None = Field(
        default=None,
        description="The screening organisation. Defaults to the API client's organisation; "
        "if given it must match it.",
    )
    site: ShortText | None = Field(default=None, description="Clinic site or camp name.")
    screener: ShortText = Field(description="Pseudonymous id of the health worker who screened.")
    tool: Tool
    interview_language: Language
    screened_at: AwareDatetime = Field(
        description="When the screening took place, with offset. Offline batches keep it."
    )


class Contact(Strict):
    """Personal. Encrypted at rest."""

    phone: Annotated[str, Field(max_length=32, pattern=r"^\+?[0-9 ()-]{5,32}$")] | None = None
    email: Annotated[str, Field(max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")] | None = None
    address: Annotated[str, Field(max_length=300)] | None = None


class Subject(Strict):
    case_code: str = Field(
        min_length=3,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="The clinic's pseudonymous case code.",
    )
    name: Annotated[str, Field(min_length=1, max_length=200)] | None = Field(
        default=None, description="Personal. Encrypted at rest; never forwarded without basis."
    )
    contact: Contact | None = Field(default=None, description="Personal. Encrypted at rest.")
    date_of_birth: date | None = Field(default=None, description="Personal. Encrypted at rest.")
    age: int | None = Field(default=None, ge=0, le=120, description="Age in years, if known.")
    age_band: AgeBand | None = None
    age_estimated: bool = False
    age_disputed: bool = False
    minority_signs: bool = Field(
        default=False,
        description="Physical or behavioural signs that the person may be under 18.",
    )
    sex: Sex = Sex.unknown
    nationality: str | None = Field(
        default=None, pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2, e.g. PE, VE, BO."
    )
    preferred_language: Language = Language.es
    speaks_spanish: bool = True
    needs_interpreter: bool = False
    region: Annotated[Region, WithJsonSchema(REGION_INPUT_SCHEMA, mode="validation")] = Field(
        description="A region name or an ubigeo code; stored as the region."
    )
    ubigeo: str | None = Field(
        default=None, pattern=r"^[0-9]{6}$", description="Six-digit district ubigeo, if known."
    )
    unaccompanied_minor: bool = False
    separated_child: bool = False
    caregiver_present: bool = False
    caregiver_suspected: bool = Field(
        default=False, description="A parent or caregiver is suspected of involvement."
    )

    @field_validator("region", mode="before")
    @classmethod
    def _region(cls, value: Any) -> Any:
        return parse_region(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> Subject:
        if self.ubigeo is not None and UBIGEO_DEPARTMENTS.get(self.ubigeo[:2]) is not self.region:
            raise ValueError("ubigeo does not lie in the given region")
        return self


class ConsentMethod(StrEnum):
    verbal = "verbal"
    written = "written"
    guardian = "guardian"
    not_obtained = "not_obtained"


class Consent(SortedSets):
    given: bool
    scopes: frozenset[ConsentScope] = Field(
        default=frozenset(), description="Services the person agreed to be referred to."
    )
    share_identifying: bool = Field(
        default=False, description="May name and contact details be shared with partners?"
    )
    method: ConsentMethod = ConsentMethod.not_obtained
    recorded_at: AwareDatetime | None = None
    lacks_capacity: bool = Field(
        default=False, description="The person lacks capacity to consent (recorded override)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Consent:
        if not self.given and (self.scopes or self.share_identifying):
            raise ValueError("scopes and share_identifying need given: true")
        return self


class SafeChannel(StrEnum):
    phone_call = "phone_call"
    sms = "sms"
    whatsapp = "whatsapp"
    in_person = "in_person"
    through_clinic = "through_clinic"


class SafeContact(Strict):
    """Personal. Encrypted at rest."""

    channel: SafeChannel
    number_or_handle: Annotated[str, Field(max_length=100)] | None = None
    safe_times: Annotated[str, Field(max_length=200)] | None = Field(
        default=None, description="e.g. 'weekdays 08:00-10:00'"
    )
    code_word: Annotated[str, Field(max_length=64)] | None = None


class Safety(Strict):
    immediate_danger: bool = False
    trafficker_nearby: bool = False
    can_return_safely: bool | None = None
    threats: bool = False
    phone_controlled: bool = Field(
        default=False, description="The phone is controlled by someone else."
    )
    safe_contact: SafeContact | None = Field(
        default=None, description="Personal. Encrypted at rest."
    )


class ExploitationType(StrEnum):
    sexual = "sexual"
    labour = "labour"
    domestic_servitude = "domestic_servitude"
    forced_begging = "forced_begging"
    forced_criminality = "forced_criminality"
    forced_marriage = "forced_marriage"
    organ_removal = "organ_removal"
    other = "other"


class ControlMethod(StrEnum):
    debt_bondage = "debt_bondage"
    documents_withheld = "documents_withheld"
    restricted_movement = "restricted_movement"
    threats = "threats"
    physical_violence = "physical_violence"
    sexual_violence = "sexual_violence"
    isolation = "isolation"
    substance_coercion = "substance_coercion"
    wages_withheld = "wages_withheld"
    deception = "deception"


class Recruitment(StrEnum):
    job_offer = "job_offer"
    family_member = "family_member"
    intimate_partner = "intimate_partner"
    acquaintance = "acquaintance"
    online = "online"
    agency = "agency"
    abduction = "abduction"
    other = "other"


class Sector(StrEnum):
    mining = "mining"
    logging = "logging"
    bar_nightclub = "bar_nightclub"
    sex_industry = "sex_industry"
    domestic_work = "domestic_work"
    agriculture = "agriculture"
    construction = "construction"
    fishing = "fishing"
    manufacturing = "manufacturing"
    street_vending = "street_vending"
    other = "other"


class Indicators(SortedSets):
    exploitation_types: frozenset[ExploitationType] = frozenset()
    control_methods: frozenset[ControlMethod] = frozenset()
    recruitment: frozenset[Recruitment] = frozenset()
    sectors: frozenset[Sector] = frozenset()


class InjurySeverity(StrEnum):
    none = "none"
    minor = "minor"
    serious = "serious"
    life_threatening = "life_threatening"


class Health(Strict):
    injury_severity: InjurySeverity = InjurySeverity.none
    hours_since_sexual_violence: float | None = Field(
        default=None, ge=0, le=24 * 365 * 5, description="Unknown or not applicable: null."
    )
    pregnant: bool | None = None
    sti_symptoms: bool = False
    febrile_illness: bool = False
    mining_exposure: bool = Field(
        default=False, description="Mercury or other exposure from gold mining."
    )
    medical_care_withheld: bool = False


class Suicidality(StrEnum):
    none = "none"
    ideation = "ideation"
    plan = "plan"
    attempt = "attempt"


class MentalHealth(Strict):
    suicidal: Suicidality = Suicidality.none
    acute_distress: bool = False
    psychosis_signs: bool = False
    positive_screen: bool = Field(
        default=False, description="Any positive mental-health screen (e.g. SRQ, PHQ)."
    )


class MigrationStatus(StrEnum):
    national = "national"
    regular = "regular"
    irregular = "irregular"
    asylum_seeker = "asylum_seeker"
    refugee = "refugee"
    unknown = "unknown"


class Legal(Strict):
    has_documents: bool | None = None
    documents_withheld: bool = False
    migration_status: MigrationStatus = MigrationStatus.unknown
    wants_police_report: bool = False
    unpaid_wages: bool = False


class Need(StrEnum):
    medical_care = "medical_care"
    psychological_support = "psychological_support"
    legal_advice = "legal_advice"
    shelter = "shelter"
    food = "food"
    return_home = "return_home"
    family_contact = "family_contact"
    documents = "documents"
    work = "work"
    education = "education"
    other = "other"


class ScreeningIn(SortedSets):
    """A screening, as a clinic app posts it (schema version 1)."""

    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        frozen=True,
        json_schema_extra={"examples": []},  # filled in by app.schemas.examples
    )

    id: UUID = Field(description="The clinic's own id for this screening (idempotency key).")
    schema_version: Literal["1"] = SCHEMA_VERSION
    source: Source
    subject: Subject
    consent: Consent
    safety: Safety = Safety()
    indicators: Indicators = Indicators()
    health: Health = Health()
    mental_health: MentalHealth = MentalHealth()
    legal: Legal = Legal()
    needs_expressed: frozenset[Need] = frozenset()
    notes: Annotated[str, Field(max_length=4000)] | None = Field(
        default=None, description="Personal free text. Encrypted at rest; never forwarded."
    )


#: Paths of the personal fields, which are encrypted at rest and stripped from stored data.
PERSONAL_PATHS: tuple[tuple[str, ...], ...] = (
    ("subject", "name"),
    ("subject", "contact"),
    ("subject", "date_of_birth"),
    ("safety", "safe_contact"),
    ("notes",),
)


def split_personal(document: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a JSON-mode dump into (non-personal data, personal fields by dotted path)."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in document.items()}
    personal: dict[str, Any] = {}
    for path in PERSONAL_PATHS:
        parent: Any = data
        for key in path[:-1]:
            parent = parent.get(key)
            if not isinstance(parent, dict):
                break
        else:
            value = parent.pop(path[-1], None)
            if value is not None:
                personal[".".join(path)] = value
    return data, personal


def merge_personal(data: dict[str, Any], personal: dict[str, Any]) -> dict[str, Any]:
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for dotted, value in personal.items():
        path = dotted.split(".")
        parent = merged
        for key in path[:-1]:
            parent = parent.setdefault(key, {})
        parent[path[-1]] = value
    return merged


def age_of(subject: Subject, on: date) -> int | None:
    """The age in years: the stated age, else computed from the date of birth."""
    if subject.age is not None:
        return subject.age
    if subject.date_of_birth is not None:
        dob = subject.date_of_birth
        return on.year - dob.year - ((on.month, on.day) < (dob.month, dob.day))
    return None
