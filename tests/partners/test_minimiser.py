"""The need-to-know minimiser: what may leave for whom, proven over generated screenings.

Every personal field carries a canary string. Over at least 10,000 generated screenings,
each rendered for every service category with and without an identifying basis (and in
thin mode), the test asserts where each canary may and may not appear, and that every JSON
path in the body is inside the category's allowlist.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
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


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


def _sets(enum: Any) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from([e.value for e in enum]), unique=True, max_size=4)


@st.composite
def screenings(draw: st.DrawFn) -> ScreeningIn:
    code = draw(st.sampled_from(sorted(UBIGEO_DEPARTMENTS)))
    region = UBIGEO_DEPARTMENTS[code]
    contact = draw(
        _maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "phone": st.just(CANARY_PHONE),
                    "email": st.just(CANARY_EMAIL),
                    "address": st.just(CANARY_ADDRESS),
                },
            )
        )
    )
    safe_contact = draw(
        _maybe(
            st.fixed_dictionaries(
                {"channel": st.sampled_from([c.value for c in SafeChannel])},
                optional={
                    "number_or_handle": st.just(CANARY_HANDLE),
                    "safe_times": st.just(CANARY_TIMES),
                    "code_word": st.just(CANARY_CODE),
                },
            )
        )
    )
    subject: dict[str, Any] = {
        "case_code": CANARY_CASE,
        "age": draw(_maybe(st.integers(0, 90))),
        "age_band": draw(_maybe(st.sampled_from([b.value for b in AgeBand]))),
        "age_estimated": draw(st.booleans()),
        "age_disputed": draw(st.booleans()),
        "minority_signs": draw(st.booleans()),
        "sex": draw(st.sampled_from([s.value for s in Sex])),
        "nationality": draw(_maybe(st.sampled_from(["PE", "VE", "BO", "CO"]))),
        "preferred_language": draw(st.sampled_from([lang.value for lang in Language])),
        "speaks_spanish": draw(st.booleans()),
        "needs_interpreter": draw(st.booleans()),
        "region": region.value,
        "ubigeo": draw(_maybe(st.just(code + "0101"))),
        "unaccompanied_minor": draw(st.booleans()),
        "caregiver_suspected": draw(st.booleans()),
        "caregiver_present": draw(st.booleans()),
    }
    if draw(st.booleans()):
        subject["name"] = CANARY_NAME
    if draw(st.booleans()):
        subject["date_of_birth"] = CANARY_DOB
    if contact is not None:
        subject["contact"] = contact
    given_consent = draw(st.booleans())
    document: dict[str, Any] = {
        "id": str(uuid.UUID(int=draw(st.integers(0, 2**64)))),
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
            "share_identifying": given_consent and draw(st.booleans()),
        },
        "safety": {
            "immediate_danger": draw(st.booleans()),
            "trafficker_nearby": draw(st.booleans()),
            "can_return_safely": draw(_maybe(st.booleans())),
            "phone_controlled": draw(st.booleans()),
            "threats": draw(st.booleans()),
        },
        "indicators": {
            "exploitation_types": draw(_sets(ExploitationType)),
            "control_methods": draw(_sets(ControlMethod)),
            "recruitment": draw(_sets(Recruitment)),
            "sectors": draw(_sets(Sector)),
        },
        "health": {
            "injury_severity": draw(st.sampled_from([i.value for i in InjurySeverity])),
            "hours_since_sexual_violence": draw(_maybe(st.floats(0, 500))),
            "pregnant": draw(_maybe(st.booleans())),
            "sti_symptoms": draw(st.booleans()),
            "mining_exposure": draw(st.booleans()),
        },
        "mental_health": {
            "suicidal": draw(st.sampled_from([s.value for s in Suicidality])),
            "psychosis_signs": draw(st.booleans()),
            "positive_screen": draw(st.booleans()),
        },
        "legal": {
            "has_documents": draw(_maybe(st.booleans())),
            "documents_withheld": draw(st.booleans()),
            "migration_status": draw(st.sampled_from([m.value for m in MigrationStatus])),
            "unpaid_wages": draw(st.booleans()),
        },
        "needs_expressed": draw(_sets(Need)),
    }
    if safe_contact is not None:
        document["safety"]["safe_contact"] = safe_contact
    if draw(st.booleans()):
        document["notes"] = CANARY_NOTES
    return ScreeningIn.model_validate(document)


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
    present = {
        path: canary
        for path, canary in IDENTIFYING_CANARIES.items()
        if canary in s.model_dump_json()
    }
    for path, canary in IDENTIFYING_CANARIES.items():
        if identifying and path in present:
            assert canary in text, (service, path)  # shared when the basis allows it
        else:
            assert canary not in text, (service, path, identifying)
    # Safety-critical contact instructions always travel.
    safe = s.safety.safe_contact
    if safe is not None and safe.code_word:
        assert body["contact_instructions"]["code_word"] == CANARY_CODE
    if safe is not None and safe.safe_times:
        assert body["contact_instructions"]["safe_times"] == CANARY_TIMES
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
    assert "CANARY" not in thin_text and CANARY_PHONE not in thin_text
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
@given(screenings())
def test_outbound_bodies_stay_inside_the_allowlist(s: ScreeningIn) -> None:
    for service in ServiceCategory:
        for identifying in (False, True):
            check_body(s, service, identifying)


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
