"""The need-to-know minimiser: what may leave for whom, proven over generated screenings.

Every personal field carries a canary string. Over at least 10,000 generated screenings,
each rendered for every service category with and without an identifying basis (and in
thin mode), the test asserts where each canary may and may not appear, and that every JSON
path in the body is inside the category's allowlist.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from app.partners.minimiser import (
    CONTACT_INSTRUCTION_KEYS,
    POLICY_PATH,
    REFERRAL_KEYS,
    PolicyError,
    build_notice_body,
    build_notification_body,
    build_referral_body,
    default_policy,
    parse_policy,
)
from app.schemas.decision import LegalBasis, ReferralFlag, Urgency
from app.schemas.screening import (
    UBIGEO_DEPARTMENTS,
    AgeBand,
    ControlMethod,
    ExploitationType,
    InjurySeverity,
    Language,
    MigrationStatus,
    Need,
    Recruitment,
    SafeChannel,
    ScreeningIn,
    Sector,
    ServiceCategory,
    Sex,
    Suicidality,
)
from tests.factories import screening
from tests.partners.helpers import decided

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
BASE = "https://ruta.example.org"

CANARY_NAME = "CANARY-NAME-Qx7"
CANARY_PHONE = "+51 (900) 111-222"
CANARY_EMAIL = "canary-mail-Qx7@example.test"
CANARY_ADDRESS = "CANARY-ADDRESS-Qx7"
CANARY_DOB = "1911-11-11"
CANARY_HANDLE = "CANARY-HANDLE-Qx7"
CANARY_TIMES = "CANARY-TIMES-Qx7"
CANARY_CODE = "CANARY-CODE-Qx7"
CANARY_NOTES = "CANARY-NOTES-Qx7"
CANARY_CASE = "CANARYCASE-Qx7"
CANARY_SCREENER = "CANARY-SCREENER-Qx7"
CANARY_SITE = "CANARY-SITE-Qx7"

IDENTIFYING_CANARIES = {
    "subject.name": CANARY_NAME,
    "subject.contact.phone": CANARY_PHONE,
    "subject.contact.email": CANARY_EMAIL,
    "subject.contact.address": CANARY_ADDRESS,
    "subject.date_of_birth": CANARY_DOB,
    "safety.safe_contact.number_or_handle": CANARY_HANDLE,
}
NEVER_CANARIES = (CANARY_NOTES, CANARY_CASE, CANARY_SCREENER, CANARY_SITE)

#: Written out by hand, independently of policy.yaml: what each service must never get.
FORBIDDEN_PREFIXES = {
    ServiceCategory.legal: ("health.", "mental_health."),
    ServiceCategory.medical: ("mental_health.", "legal."),
    ServiceCategory.psychological: ("health.", "legal."),
    ServiceCategory.protection: ("health.", "mental_health."),
}
ALWAYS_FORBIDDEN = ("notes", "consent.", "source.", "subject.case_code", "id", "schema_version")


def _values(enum: Any) -> list[str]:
    return [e.value for e in enum]


def random_document(rng: random.Random) -> dict[str, Any]:
    """A screening document with canaries in every personal field that is present.

    Built from one random source rather than one Hypothesis draw per field: drawing ~60
    fields through Hypothesis costs ~25 ms a screening, too slow for 10,000 of them.
    """

    def maybe(value: Any) -> Any:
        return value if rng.random() < 0.5 else None

    def subset(enum: Any) -> list[str]:
        return rng.sample(_values(enum), rng.randint(0, 4))

    def optional_fields(fields: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in fields.items() if rng.random() < 0.6}

    code = rng.choice(sorted(UBIGEO_DEPARTMENTS))
    subject: dict[str, Any] = {
        "case_code": CANARY_CASE,
        "age": maybe(rng.randint(0, 90)),
        "age_band": maybe(rng.choice(_values(AgeBand))),
        "age_estimated": rng.random() < 0.5,
        "age_disputed": rng.random() < 0.5,
        "minority_signs": rng.random() < 0.5,
        "sex": rng.choice(_values(Sex)),
        "nationality": maybe(rng.choice(["PE", "VE", "BO", "CO"])),
        "preferred_language": rng.choice(_values(Language)),
        "speaks_spanish": rng.random() < 0.5,
        "needs_interpreter": rng.random() < 0.5,
        "region": UBIGEO_DEPARTMENTS[code].value,
        "ubigeo": maybe(code + "0101"),
        "unaccompanied_minor": rng.random() < 0.5,
        "caregiver_suspected": rng.random() < 0.5,
        "caregiver_present": rng.random() < 0.5,
    }
    if rng.random() < 0.5:
        subject["name"] = CANARY_NAME
    if rng.random() < 0.5:
        subject["date_of_birth"] = CANARY_DOB
    if rng.random() < 0.7:
        subject["contact"] = optional_fields(
            {"phone": CANARY_PHONE, "email": CANARY_EMAIL, "address": CANARY_ADDRESS}
        )
    given_consent = rng.random() < 0.7
    document: dict[str, Any] = {
        "id": str(uuid.UUID(int=rng.getrandbits(128))),
        "source": {
            "site": CANARY_SITE,
            "screener": CANARY_SCREENER,
            "tool": {"name": "tvit", "version": "2.1"},
            "interview_language": "es",
            "screened_at": "2026-11-20T09:40:00-05:00",
        },
        "subject": subject,
        "consent": {
            "given": given_consent,
            "share_identifying": given_consent and rng.random() < 0.5,
        },
        "safety": {
            "immediate_danger": rng.random() < 0.5,
            "trafficker_nearby": rng.random() < 0.5,
            "can_return_safely": maybe(rng.random() < 0.5),
            "phone_controlled": rng.random() < 0.5,
            "threats": rng.random() < 0.5,
        },
        "indicators": {
            "exploitation_types": subset(ExploitationType),
            "control_methods": subset(ControlMethod),
            "recruitment": subset(Recruitment),
            "sectors": subset(Sector),
        },
        "health": {
            "injury_severity": rng.choice(_values(InjurySeverity)),
            "hours_since_sexual_violence": maybe(rng.uniform(0, 500)),
            "pregnant": maybe(rng.random() < 0.5),
            "sti_symptoms": rng.random() < 0.5,
            "mining_exposure": rng.random() < 0.5,
        },
        "mental_health": {
            "suicidal": rng.choice(_values(Suicidality)),
            "psychosis_signs": rng.random() < 0.5,
            "positive_screen": rng.random() < 0.5,
        },
        "legal": {
            "has_documents": maybe(rng.random() < 0.5),
            "documents_withheld": rng.random() < 0.5,
            "migration_status": rng.choice(_values(MigrationStatus)),
            "unpaid_wages": rng.random() < 0.5,
        },
        "needs_expressed": subset(Need),
    }
    if rng.random() < 0.7:
        document["safety"]["safe_contact"] = {
            "channel": rng.choice(_values(SafeChannel)),
            **optional_fields(
                {
                    "number_or_handle": CANARY_HANDLE,
                    "safe_times": CANARY_TIMES,
                    "code_word": CANARY_CODE,
                }
            ),
        }
    if rng.random() < 0.5:
        document["notes"] = CANARY_NOTES
    return document


@st.composite
def screenings(draw: st.DrawFn) -> ScreeningIn:
    # One drawn seed: Hypothesis records every call on st.randoms() as a choice, which
    # costs ~20 ms a screening; a seeded generator is replayable and fast.
    seed = draw(st.integers(min_value=0, max_value=2**64 - 1))
    return ScreeningIn.model_validate(random_document(random.Random(seed)))


def leaf_paths(node: Any, prefix: str = "") -> set[str]:
    if isinstance(node, dict):
        paths: set[str] = set()
        for key, value in node.items():
            paths |= leaf_paths(value, f"{prefix}{key}.")
        return paths
    return {prefix.rstrip(".")}


def render(s: ScreeningIn, service: ServiceCategory, identifying: bool, thin: bool) -> Any:
    return build_referral_body(
        referral_id=uuid.UUID(int=1),
        partner_id="partner-x",
        decided=decided(
            service,
            urgency=Urgency.urgent,
            basis=LegalBasis.child_protection_duty if identifying else LegalBasis.consent,
            identifying=identifying,
        ),
        screening=s,
        respond_by=NOW,
        flags=frozenset({ReferralFlag.interpreter_needed}),
        referring_organisation="Caravana de la Vida",
        public_base_url=BASE,
        thin=thin,
    )


def check_body(s: ScreeningIn, service: ServiceCategory, identifying: bool) -> None:
    policy = default_policy()
    out = render(s, service, identifying, thin=False)
    text = out.to_bytes().decode()
    body = json.loads(text)

    for canary in NEVER_CANARIES:
        assert canary not in text, (service, canary)
    source = s.model_dump_json()
    present = {path for path, canary in IDENTIFYING_CANARIES.items() if canary in source}
    if s.safety.phone_controlled:
        present.discard("subject.contact.phone")  # a controlled phone's number never leaves
    for path, canary in IDENTIFYING_CANARIES.items():
        if identifying and path in present:
            assert canary in text, (service, path)  # shared when the basis allows it
        else:
            assert canary not in text, (service, path, identifying)
    # Safety-critical contact instructions always travel.
    safe = s.safety.safe_contact
    if safe is not None and safe.code_word:
        assert body["contact_instructions"]["code_word"] == safe.code_word
    if safe is not None and safe.safe_times:
        assert body["contact_instructions"]["safe_times"] == safe.safe_times
    assert body["contact_instructions"]["phone_controlled"] is s.safety.phone_controlled
    if s.subject.caregiver_suspected:
        assert body["contact_instructions"]["do_not_contact_caregiver"] is True

    assert set(body) == {
        "type",
        "format",
        "thin",
        "referral",
        "contact_instructions",
        "screening",
        "data_categories",
    }
    assert set(body["referral"]) <= REFERRAL_KEYS
    assert set(body["contact_instructions"]) <= CONTACT_INSTRUCTION_KEYS
    if not identifying:
        assert "number_or_handle" not in body["contact_instructions"]

    allowed = policy.allowed_paths(service, identifying)
    paths = leaf_paths(body["screening"]) if body["screening"] else set()
    assert paths <= allowed, paths - allowed
    for path in paths:
        assert not path.startswith(FORBIDDEN_PREFIXES[service]), (service, path)
        assert not path.startswith(ALWAYS_FORBIDDEN), path
    assert set(out.data_categories) <= set(policy.allowed_categories(service, identifying))
    assert set(body["data_categories"]) == set(out.data_categories)
    if not identifying:
        assert not {"identity", "contact"} & set(out.data_categories)

    thin = render(s, service, identifying, thin=True)
    thin_text = thin.to_bytes().decode()
    assert "CANARY" not in thin_text
    assert CANARY_PHONE not in thin_text
    assert CANARY_DOB not in thin_text
    assert set(thin.body) == {"type", "format", "thin", "referral"}
    assert set(thin.body["referral"]) == {
        "id",
        "partner_id",
        "service",
        "urgency",
        "respond_by",
        "status_url",
        "details_url",
    }
    assert thin.data_categories == ()


@hsettings(
    max_examples=10_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(screenings(), st.sampled_from(list(ServiceCategory)), st.booleans())
def test_outbound_bodies_stay_inside_the_allowlist(
    s: ScreeningIn, service: ServiceCategory, identifying: bool
) -> None:
    """10,000 generated screenings, each rendered for a drawn service and basis."""
    check_body(s, service, identifying)


@hsettings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(screenings())
def test_every_service_and_basis_for_the_same_screening(s: ScreeningIn) -> None:
    for service in ServiceCategory:
        for identifying in (False, True):
            check_body(s, service, identifying)


def _shared_by_path(s: ScreeningIn, service: ServiceCategory, identifying: bool) -> Any:
    """The reference: every allowed leaf path with a value, one at a time."""
    document = s.model_dump(mode="json")
    phone_controlled = s.safety.phone_controlled  # render() adds interpreter_needed only
    shared: dict[str, Any] = {}
    fields: list[str] = []
    for path in sorted(default_policy().allowed_paths(service, identifying)):
        if path.startswith("safety.safe_contact.") or (
            path == "subject.contact.phone" and phone_controlled
        ):
            continue
        node: Any = document
        for key in path.split("."):
            node = node.get(key) if isinstance(node, dict) else None
        if node is None or node == []:
            continue
        *parents, leaf = path.split(".")
        target = shared
        for key in parents:
            target = target.setdefault(key, {})
        target[leaf] = node
        fields.append(path)
    return shared, fields


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(screenings())
def test_bodies_share_every_allowed_field_that_has_a_value(s: ScreeningIn) -> None:
    """Not only nothing outside the allow-list: nothing inside it with a value is dropped,
    and the order is the sorted paths' order (what the projection tree replaced)."""
    for service in ServiceCategory:
        for identifying in (False, True):
            out = render(s, service, identifying, thin=False)
            shared, fields = _shared_by_path(s, service, identifying)
            assert json.dumps(out.body["screening"]) == json.dumps(shared)
            assert [f for f in out.fields if not f.startswith("safety.safe_contact.")] == fields


def test_legal_never_gets_clinical_details_in_a_full_screening() -> None:
    from tests.factories import screening

    s = ScreeningIn.model_validate(screening())
    body = render(s, ServiceCategory.legal, True, thin=False).body
    assert "health" not in body["screening"]
    assert "mental_health" not in body["screening"]
    assert "clinical" not in body["data_categories"]
    medical = render(s, ServiceCategory.medical, False, thin=False).body
    assert medical["screening"]["health"]["sti_symptoms"] is True


def test_details_link_and_status_link() -> None:
    from tests.factories import screening

    s = ScreeningIn.model_validate(screening())
    thin = render(s, ServiceCategory.medical, False, thin=True).body
    rid = str(uuid.UUID(int=1))
    assert thin["referral"]["details_url"] == f"{BASE}/v1/referrals/{rid}/details"
    assert thin["referral"]["status_url"] == f"{BASE}/v1/referrals/{rid}/status"


def test_same_inputs_give_the_same_bytes() -> None:
    from tests.factories import screening

    s = ScreeningIn.model_validate(screening())
    a = render(s, ServiceCategory.protection, True, thin=False).to_bytes()
    b = render(s, ServiceCategory.protection, True, thin=False).to_bytes()
    assert a == b


def _policy_doc() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(POLICY_PATH.read_text())
    return doc


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["services"]["legal"].append("clinical"), "may never receive"),
        (lambda d: d["never"].remove("notes"), "unclassified"),
        (lambda d: d["data_categories"]["demographics"].remove("subject.sex"), "unclassified"),
        (lambda d: d["data_categories"]["needs"].append("subject.nmae"), "not a screening field"),
        (lambda d: d["data_categories"]["identity"].remove("subject.name"), "unclassified"),
        (lambda d: d.pop("forbidden") and d["services"]["legal"].append("mental_health"), "legal"),
    ],
)
def test_policy_loader_refuses_unsafe_edits(mutate: Any, message: str) -> None:
    doc = _policy_doc()
    mutate(doc)
    with pytest.raises(PolicyError, match=message):
        parse_policy(doc)


def test_moving_a_name_out_of_identifying_is_refused() -> None:
    doc = _policy_doc()
    doc["data_categories"]["identity"].remove("subject.name")
    doc["data_categories"]["demographics"].append("subject.name")
    with pytest.raises(PolicyError, match="identifying"):
        parse_policy(doc)


def test_safety_instructions_travel_without_identifying_basis() -> None:
    from tests.factories import screening

    doc = screening(
        subject__caregiver_suspected=True,
        subject__contact={"phone": CANARY_PHONE},
        safety__phone_controlled=True,
        safety__safe_contact={
            "channel": "whatsapp",
            "number_or_handle": CANARY_HANDLE,
            "safe_times": CANARY_TIMES,
            "code_word": CANARY_CODE,
        },
    )
    s = ScreeningIn.model_validate(doc)
    plain = render(s, ServiceCategory.protection, False, thin=False)
    contact = plain.body["contact_instructions"]
    assert contact["code_word"] == CANARY_CODE
    assert contact["safe_times"] == CANARY_TIMES
    assert contact["phone_controlled"] is True
    assert contact["do_not_contact_caregiver"] is True
    assert contact["contact_through_referrer"] is True
    assert "number_or_handle" not in contact
    assert CANARY_PHONE not in plain.to_bytes().decode()
    # With an identifying basis the safe handle leaves, the controlled phone still does not.
    full = render(s, ServiceCategory.protection, True, thin=False)
    assert full.body["contact_instructions"]["number_or_handle"] == CANARY_HANDLE
    assert CANARY_PHONE not in full.to_bytes().decode()
    assert "contact" in full.data_categories


def _section_examples(heading: str) -> list[dict[str, Any]]:
    text = (Path(__file__).resolve().parents[2] / "docs" / "partners.md").read_text("utf-8")
    section = text.split(heading, 1)[1].split("\n### ", 1)[0]
    return [json.loads(e) for e in re.findall(r"```json\n(.*?)```", section, flags=re.DOTALL)]


def test_documented_notices_are_what_the_minimiser_builds() -> None:
    """docs/partners.md shows the real notices after a withdrawal, for both outcomes."""
    referral_id = uuid.UUID("0f1e2d3c-4b5a-4968-8776-655443322110")
    revoked, stands = _section_examples("### Notices after consent is withdrawn")
    assert revoked == json.loads(
        build_notice_body(
            kind="referral.revoked",
            referral_id=referral_id,
            partner_id=revoked["referral"]["partner_id"],
        )
    )
    assert stands == json.loads(
        build_notice_body(
            kind="referral.consent_withdrawn",
            referral_id=referral_id,
            partner_id=stands["referral"]["partner_id"],
            legal_basis="child_protection_duty",
        )
    )


def test_notification_carries_nothing_that_identifies() -> None:
    """A non-identifying notification: the documented shape, and none of the person's
    identifying or quasi-identifying values (no exact age, nationality, district, day)."""
    [documented] = _section_examples("### Non-identifying notifications")
    s = ScreeningIn.model_validate(
        screening(
            subject__age=27,
            subject__nationality="VE",
            subject__name=CANARY_NAME,
            notes=CANARY_NOTES,
        )
    )
    raw, categories = build_notification_body(
        notification_id=uuid.UUID("6c3f2f4e-7d0b-4a8e-9b1c-2d3e4f5a6b7c"),
        screening=s,
        referring_organisation="Caravana de la Vida",
        now=NOW,
    )
    body = json.loads(raw)
    assert set(body) == set(documented)
    assert set(body["case"]) == set(documented["case"])
    assert set(body["notification"]) == set(documented["notification"])
    assert body["case"]["age_band"] == "25-34"
    text = raw.decode()
    for value in (CANARY_NAME, CANARY_NOTES, "VE", "170101", "MDD-2026-0173", str(s.id), "27"):
        assert value not in text
    assert body["notification"]["month"] == NOW.strftime("%Y-%m")
    assert set(categories) == {"demographics", "location", "exploitation"}
