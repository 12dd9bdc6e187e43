"""The fhir-r4 rendering: a valid FHIR Bundle that carries the minimised body, nothing more.

Over generated screenings (children and adults, every service, urgency and basis, full and
thin), each FHIR body is validated with fhir.resources plus the R4 value sets, and compared
with the ``ruta-json`` body the minimiser builds for the same partner: every canary leaves
in FHIR exactly when it leaves in ``ruta-json``, every string in the Bundle is either in
the ``ruta-json`` body or fixed FHIR/Ruta vocabulary, and the screening fields the Task
carries are exactly the minimised ones, value for value.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from app.partners.directory import Organisation, PayloadFormat
from app.partners.minimiser import (
    CONTACT_INSTRUCTION_KEYS,
    REFERRAL_KEYS,
    OutboundReferral,
    build_notice_body,
    build_referral_body,
    default_policy,
)
from app.schemas.decision import LegalBasis, ReferralFlag, Urgency
from app.schemas.screening import ScreeningIn, ServiceCategory
from tests.factories import screening
from tests.partners.fhir_check import inputs, one, resources, scalars, strings, validate
from tests.partners.helpers import decided
from tests.partners.test_minimiser import (
    ALWAYS_FORBIDDEN,
    BASE,
    CANARY_CODE,
    CANARY_TIMES,
    FORBIDDEN_PREFIXES,
    IDENTIFYING_CANARIES,
    NEVER_CANARIES,
    NOW,
    screenings,
)

ROOT = Path(__file__).resolve().parents[2]
ORG = Organisation(id="hogar-refugio", name="Hogar Refugio (invented)")
REFERRAL_ID = uuid.UUID("0f1e2d3c-4b5a-4968-8776-655443322110")
#: Written by hand from domain.md, not imported from the code under test.
PRIORITY = {Urgency.emergency: "stat", Urgency.urgent: "urgent", Urgency.routine: "routine"}
#: Fixed vocabulary a Bundle may use besides the ruta-json body's own strings.
VOCABULARY = {
    "Bundle",
    "Task",
    "ServiceRequest",
    "Patient",
    "Organization",
    "collection",
    "requested",
    "cancelled",
    "order",
    "fulfill",
    "active",
    "awaiting-response",
    "awaiting response",
    "revoked",
    "lang",
    "content",
    "phone",
    "email",
    "PE",
    "stat",
    "urgent",
    "routine",
    "female",
    "male",
    "other",
    "unknown",
    "Medical care",
    "Psychological care",
    "Legal aid",
    "Protection",
    "Referral: medical care",
    "Referral: psychological care",
    "Referral: legal aid",
    "Referral: protection",
    "urn:ietf:rfc:3986",
    "urn:ietf:bcp:47",
    "es",
    "en",
    ORG.id,
    ORG.name,
}
UUID_URN = re.compile(r"^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def render(
    s: ScreeningIn,
    service: ServiceCategory,
    *,
    identifying: bool,
    thin: bool,
    urgency: Urgency = Urgency.urgent,
    flags: frozenset[ReferralFlag] = frozenset({ReferralFlag.interpreter_needed}),
    payload_format: PayloadFormat = PayloadFormat.fhir_r4,
) -> OutboundReferral:
    return build_referral_body(
        referral_id=REFERRAL_ID,
        partner_id="hogar-refugio-mdd",
        decided=decided(
            service,
            urgency=urgency,
            basis=LegalBasis.child_protection_duty if identifying else LegalBasis.consent,
            identifying=identifying,
            flags=flags,
        ),
        screening=s,
        respond_by=NOW,
        flags=flags,
        referring_organisation="Caravana de la Vida",
        public_base_url=BASE,
        thin=thin,
        payload_format=payload_format,
        organisation=ORG if payload_format is PayloadFormat.fhir_r4 else None,
    )


def _fixed(value: str) -> bool:
    return (
        value in VOCABULARY
        or value.startswith((f"{BASE}/fhir/", "http://hl7.org/fhir/"))
        or bool(UUID_URN.match(value))
    )


def _flat(node: Any, path: str) -> list[tuple[str, str]]:
    """(path, JSON value) pairs of a ruta-json subtree; lists give one pair per item."""
    if isinstance(node, dict):
        return [p for key, value in node.items() for p in _flat(value, f"{path}.{key}")]
    if isinstance(node, list):
        return [p for item in node for p in _flat(item, path)]
    return [(path, json.dumps(node, sort_keys=True))]


def check_fhir(
    s: ScreeningIn,
    service: ServiceCategory,
    *,
    identifying: bool,
    thin: bool,
    urgency: Urgency,
    flags: frozenset[ReferralFlag],
) -> dict[str, Any]:
    plain = render(
        s,
        service,
        identifying=identifying,
        thin=thin,
        urgency=urgency,
        flags=flags,
        payload_format=PayloadFormat.ruta_json,
    )
    out = render(s, service, identifying=identifying, thin=thin, urgency=urgency, flags=flags)
    # The same minimised body underneath; only the rendering differs.
    assert out.body == plain.body
    assert (out.fields, out.data_categories) == (plain.fields, plain.data_categories)
    raw = out.to_bytes()
    document = validate(raw)
    text, plain_text = raw.decode(), plain.to_bytes().decode()

    # A canary leaves in FHIR exactly when the minimiser lets it leave in ruta-json.
    for canary in (*IDENTIFYING_CANARIES.values(), *NEVER_CANARIES, CANARY_TIMES, CANARY_CODE):
        assert (canary in text) == (canary in plain_text), (service, identifying, canary)
    for canary in NEVER_CANARIES:
        assert canary not in text
    if thin:
        assert "CANARY" not in text

    # Every string comes from the minimised body or is fixed vocabulary.
    body_strings = set(strings(plain.body))
    reasons = plain.body["referral"].get("reasons", [])
    for locale in ("es", "en"):
        body_strings.add("; ".join(r["text"][locale] for r in reasons if locale in r["text"]))
    task = one(document, "Task")
    codes = [code for code, _ in inputs(task)]
    without_codes = json.loads(raw)
    for item in one(without_codes, "Task").get("input", []):
        del item["type"]  # field names, checked below
    stray = [v for v in strings(without_codes) if v not in body_strings and not _fixed(v)]
    assert not stray, stray
    # Input codes name ruta-json fields only.
    for code in codes:
        part, _, rest = code.partition(".")
        if part == "referral":
            assert rest in REFERRAL_KEYS, code
        elif part == "contact_instructions":
            assert rest in CONTACT_INSTRUCTION_KEYS, code
        else:
            assert part in ("screening", "data_categories"), code
    numbers = {json.dumps(n) for n in scalars(document) if not isinstance(n, bool)}
    assert numbers <= {json.dumps(n) for n in scalars(plain.body) if not isinstance(n, bool)}

    request = one(document, "ServiceRequest")
    patient = one(document, "Patient")
    assert task["status"] == "requested"
    assert task["intent"] == request["intent"] == "order"
    assert request["status"] == "active"
    assert task["priority"] == request["priority"] == PRIORITY[urgency]
    assert task["focus"]["reference"] == document["entry"][1]["fullUrl"]
    assert task["owner"]["identifier"]["value"] == ORG.id
    assert request["category"][0]["coding"][0]["code"] == service.value
    assert {i["value"] for i in task["identifier"] + request["identifier"]} == {
        f"urn:uuid:{REFERRAL_ID}"
    }
    assert task["restriction"]["period"]["end"] == request["occurrencePeriod"]["end"]
    assert datetime.fromisoformat(task["restriction"]["period"]["end"]) == NOW

    # The screening fields in the Task are exactly the minimised ones, value for value.
    carried = sorted(
        (code.removeprefix("screening."), json.dumps(value, sort_keys=True))
        for code, value in inputs(task)
        if code.startswith("screening.")
    )
    expected = sorted(
        (path.removeprefix("."), value)
        for path, value in _flat(plain.body.get("screening") or {}, "")
    )
    assert carried == expected
    allowed = default_policy().allowed_paths(service, identifying)
    for path, _value in carried:
        assert path in allowed, path
        assert not path.startswith(FORBIDDEN_PREFIXES[service])
        assert not path.startswith(ALWAYS_FORBIDDEN)
    # The Patient holds nothing the screening inputs do not.
    subject = (plain.body.get("screening") or {}).get("subject", {})
    if "name" not in subject:
        assert "name" not in patient
    if "date_of_birth" not in subject:
        assert "birthDate" not in patient
    if "contact" not in subject:
        assert "telecom" not in patient
    if thin:
        assert patient == {"resourceType": "Patient"}
        assert {code for code, _ in inputs(task)} == {
            "referral.partner_id",
            "referral.status_url",
            "referral.details_url",
        }
    return document


@hsettings(
    max_examples=1_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    screenings(),
    st.sampled_from(list(ServiceCategory)),
    st.booleans(),
    st.booleans(),
    st.sampled_from(list(Urgency)),
    st.frozensets(st.sampled_from(list(ReferralFlag))),
)
def test_fhir_bodies_are_valid_and_carry_only_minimised_fields(
    s: ScreeningIn,
    service: ServiceCategory,
    identifying: bool,
    thin: bool,
    urgency: Urgency,
    flags: frozenset[ReferralFlag],
) -> None:
    check_fhir(s, service, identifying=identifying, thin=thin, urgency=urgency, flags=flags)


@hsettings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(screenings())
def test_every_service_basis_and_urgency_for_the_same_screening(s: ScreeningIn) -> None:
    for service in ServiceCategory:
        for identifying in (False, True):
            for urgency in Urgency:
                check_fhir(
                    s,
                    service,
                    identifying=identifying,
                    thin=False,
                    urgency=urgency,
                    flags=frozenset(),
                )


@pytest.mark.parametrize("urgency", list(Urgency))
@pytest.mark.parametrize("service", list(ServiceCategory))
def test_child_protection_and_adult_examples(service: ServiceCategory, urgency: Urgency) -> None:
    child = ScreeningIn.model_validate(
        screening(subject__age=15, subject__name="Niña Inventada", subject__sex="female")
    )
    document = check_fhir(
        child,
        service,
        identifying=True,
        thin=False,
        urgency=urgency,
        flags=frozenset({ReferralFlag.treat_as_child, ReferralFlag.guardian_needed}),
    )
    patient = one(document, "Patient")
    assert patient["name"] == [{"text": "Niña Inventada"}]
    assert patient["gender"] == "female"
    flags = {v for c, v in inputs(one(document, "Task")) if c == "referral.flags"}
    assert flags == {"treat_as_child", "guardian_needed"}

    adult = ScreeningIn.model_validate(screening(subject__age=30, subject__name="Adulta X"))
    document = check_fhir(
        adult, service, identifying=False, thin=False, urgency=urgency, flags=frozenset()
    )
    assert "name" not in one(document, "Patient")
    assert "Adulta X" not in json.dumps(document)


def test_legal_aid_never_gets_clinical_details_in_fhir() -> None:
    s = ScreeningIn.model_validate(screening())
    document = validate(render(s, ServiceCategory.legal, identifying=True, thin=False).to_bytes())
    codes = {code for code, _ in inputs(one(document, "Task"))}
    assert not {c for c in codes if c.startswith(("screening.health.", "screening.mental_health."))}
    medical = validate(render(s, ServiceCategory.medical, identifying=False, thin=False).to_bytes())
    assert ("screening.health.sti_symptoms", True) in inputs(one(medical, "Task"))


def test_same_inputs_give_the_same_bytes() -> None:
    s = ScreeningIn.model_validate(screening())
    a = render(s, ServiceCategory.protection, identifying=True, thin=False).to_bytes()
    b = render(s, ServiceCategory.protection, identifying=True, thin=False).to_bytes()
    assert a == b
    assert a.startswith(b'{"resourceType":"Bundle"')


def test_a_fhir_body_needs_the_owner() -> None:
    s = ScreeningIn.model_validate(screening())
    with pytest.raises(ValueError, match="organisation"):
        build_referral_body(
            referral_id=REFERRAL_ID,
            partner_id="p",
            decided=decided(),
            screening=s,
            respond_by=NOW,
            flags=frozenset(),
            referring_organisation="Caravana de la Vida",
            public_base_url=BASE,
            payload_format=PayloadFormat.fhir_r4,
        )


def test_revocation_notice_is_a_cancelled_task_without_personal_data() -> None:
    raw = build_notice_body(
        kind="referral.revoked",
        referral_id=REFERRAL_ID,
        partner_id="hogar-refugio-mdd",
        payload_format=PayloadFormat.fhir_r4,
        organisation=ORG,
        public_base_url=BASE,
    )
    document = validate(raw)
    assert resources(document, "ServiceRequest") == resources(document, "Patient") == []
    task = one(document, "Task")
    assert task["status"] == "cancelled"
    assert task["statusReason"]["coding"][0]["code"] == "consent_withdrawn"
    assert task["identifier"] == [
        {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{REFERRAL_ID}"}
    ]
    assert task["focus"]["identifier"]["value"] == f"urn:uuid:{REFERRAL_ID}"
    assert task["owner"]["identifier"]["value"] == ORG.id
    assert inputs(task) == [("referral.partner_id", "hogar-refugio-mdd")]
    plain = json.loads(
        build_notice_body(kind="referral.revoked", referral_id=REFERRAL_ID, partner_id="x")
    )
    assert plain["type"] == "referral.revoked"  # ruta-json partners keep their format
    assert plain["referral"]["stands"] is False


def test_consent_withdrawn_notice_says_the_referral_stands_on_its_basis() -> None:
    raw = build_notice_body(
        kind="referral.consent_withdrawn",
        referral_id=REFERRAL_ID,
        partner_id="upe-mimp-nacional",
        legal_basis="child_protection_duty",
        payload_format=PayloadFormat.fhir_r4,
        organisation=ORG,
        public_base_url=BASE,
    )
    document = validate(raw)
    assert resources(document, "ServiceRequest") == resources(document, "Patient") == []
    task = one(document, "Task")
    assert task["status"] == "requested"  # the referral stands
    assert task["businessStatus"]["coding"][0]["code"] == "consent-withdrawn"
    assert ("referral.legal_basis", "child_protection_duty") in inputs(task)
    plain = json.loads(
        build_notice_body(
            kind="referral.consent_withdrawn",
            referral_id=REFERRAL_ID,
            partner_id="x",
            legal_basis="vital_interest",
        )
    )
    assert plain["referral"]["stands"] is True
    assert plain["referral"]["legal_basis"] == "vital_interest"
    assert "vital interest" in plain["referral"]["instruction"]["en"]
    with pytest.raises(ValueError, match="a referral that stands rests on"):
        build_notice_body(
            kind="referral.consent_withdrawn", referral_id=REFERRAL_ID, partner_id="x"
        )


def _doc_examples() -> list[str]:
    text = (ROOT / "docs" / "partners.md").read_text(encoding="utf-8")
    section = text.split("### The `fhir-r4` payload", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```json\n(.*?)```", section, flags=re.DOTALL)


def test_the_documented_examples_are_what_the_minimiser_builds() -> None:
    """docs/partners.md shows real output: the thin Bundle and the revocation notice."""
    examples = [json.loads(e) for e in _doc_examples()]
    assert len(examples) >= 2
    s = ScreeningIn.model_validate(screening())
    thin = render(
        s, ServiceCategory.legal, identifying=False, thin=True, urgency=Urgency.routine
    ).document
    revoked = json.loads(
        build_notice_body(
            kind="referral.revoked",
            referral_id=REFERRAL_ID,
            partner_id="hogar-refugio-mdd",
            payload_format=PayloadFormat.fhir_r4,
            organisation=ORG,
            public_base_url=BASE,
        )
    )
    for example in examples:
        validate(json.dumps(example).encode())
    assert thin in examples
    assert revoked in examples
