"""Every FHIR code a body cites resolves: ``<public base URL>/fhir/CodeSystem/<name>``
answers a valid FHIR R4 CodeSystem (application/fhir+json) that holds the code; several
rules are several CodeableConcepts, never one concept with several codings."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
from fhir.resources.R4B.codesystem import CodeSystem
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from app.main import create_app
from app.partners.directory import Organisation, PayloadFormat
from app.partners.minimiser import build_notice_body, build_referral_body
from app.schemas.decision import LegalBasis, Reason, ReferralFlag, Urgency
from app.schemas.screening import ScreeningIn, ServiceCategory
from app.schemas.webhooks import FhirCodeSystem
from app.settings import Environment, Settings
from tests.factories import screening
from tests.partners.fhir_check import one, validate
from tests.partners.helpers import decided
from tests.partners.test_minimiser import NOW, screenings

BASE = "https://ruta.example.org"
ORG = Organisation(id="hogar-refugio", name="Hogar Refugio (invented)")
APP = create_app(
    Settings(env=Environment.test, database_url="sqlite+aiosqlite://", public_base_url=BASE)
)


def codings(node: Any) -> Iterator[dict[str, str]]:
    if isinstance(node, dict):
        if {"system", "code"} <= set(node) and isinstance(node["code"], str):
            yield node
        for value in node.values():
            yield from codings(value)
    elif isinstance(node, list):
        for value in node:
            yield from codings(value)


def served(name: str) -> dict[str, Any]:
    """GET the code system through the app (no key)."""

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=APP)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
            return await http.get(f"/fhir/CodeSystem/{name}")

    answer = asyncio.run(get())
    assert answer.status_code == 200, (name, answer.text)
    assert answer.headers["content-type"] == "application/fhir+json; fhirVersion=4.0"
    resource: dict[str, Any] = json.loads(answer.content)
    CodeSystem.model_validate(resource)
    FhirCodeSystem.model_validate(resource)
    assert resource["count"] == len(resource["concept"])
    return resource


CODES: dict[str, set[str]] = {}


def codes_of(system: str) -> set[str]:
    if system not in CODES:
        resource = served(system.rsplit("/", 1)[1])
        assert resource["url"] == system
        CODES[system] = {c["code"] for c in resource["concept"]}
    return CODES[system]


def bodies(s: ScreeningIn, service: ServiceCategory, thin: bool) -> list[dict[str, Any]]:
    rules = list(APP.state.rule_set.rules)[:2]
    referral = decided(
        service,
        basis=LegalBasis.child_protection_duty,
        identifying=True,
        flags=frozenset(ReferralFlag),
    ).model_copy(
        update={
            "reasons": tuple(
                Reason(
                    rule_id=r.rule.id,
                    guideline=r.rule.guideline,
                    text=r.rule.reason,
                    urgency=Urgency.urgent,
                    legal_basis=LegalBasis.consent,
                )
                for r in rules
            )
        }
    )
    found = []
    for event in ("referral.created", "referral.details"):
        out = build_referral_body(
            referral_id=uuid.uuid4(),
            partner_id="hogar-refugio-mdd",
            decided=referral,
            screening=s,
            respond_by=NOW,
            flags=referral.flags,
            referring_organisation="Caravana de la Vida",
            public_base_url=BASE,
            thin=thin and event == "referral.created",
            event=event,
            payload_format=PayloadFormat.fhir_r4,
            organisation=ORG,
            consent_withdrawn=True,
        )
        found.append(validate(out.to_bytes()))
    for kind, basis in (
        ("referral.revoked", None),
        ("referral.consent_withdrawn", "vital_interest"),
    ):
        raw = build_notice_body(
            kind=kind,  # type: ignore[arg-type]
            referral_id=uuid.uuid4(),
            partner_id="hogar-refugio-mdd",
            legal_basis=basis,
            payload_format=PayloadFormat.fhir_r4,
            organisation=ORG,
            public_base_url=BASE,
        )
        found.append(validate(raw))
    return found


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(screenings(), st.sampled_from(list(ServiceCategory)), st.booleans())
def test_every_code_a_body_cites_is_in_the_code_system_served_at_its_url(
    s: ScreeningIn, service: ServiceCategory, thin: bool
) -> None:
    for document in bodies(s, service, thin):
        for coding in codings(document):
            system = coding["system"]
            if system.startswith(f"{BASE}/fhir/CodeSystem/"):
                assert coding["code"] in codes_of(system), coding


def test_every_code_system_is_served_and_an_unknown_one_is_404() -> None:
    for name in ("service-category", "rule", "field", "event", "business-status", "status-reason"):
        resource = served(name)
        assert resource["url"] == f"{BASE}/fhir/CodeSystem/{name}"
        assert resource["concept"]
    rules = served("rule")
    assert rules["version"] == APP.state.rule_set.version
    minor = next(c for c in rules["concept"] if c["code"] == "minor-protection")
    assert {d["language"] for d in minor["designation"]} >= {"es", "en"}

    async def missing() -> httpx.Response:
        transport = httpx.ASGITransport(app=APP)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
            return await http.get("/fhir/CodeSystem/organisation")

    answer = asyncio.run(missing())
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"


def test_several_rules_are_several_concepts_never_one_concept_with_several_codes() -> None:
    s = ScreeningIn.model_validate(screening())
    full = bodies(s, ServiceCategory.protection, thin=False)[0]
    task, request = one(full, "Task"), one(full, "ServiceRequest")
    rule_system = f"{BASE}/fhir/CodeSystem/rule"
    # R4's Task.reasonCode is one CodeableConcept: with two rules it says them in text,
    # and the ServiceRequest codes each rule in a concept of its own.
    assert isinstance(task["reasonCode"], dict)
    assert len(task["reasonCode"].get("coding", [])) <= 1
    assert [len(c["coding"]) for c in request["reasonCode"]] == [1, 1]
    assert {c["coding"][0]["system"] for c in request["reasonCode"]} == {rule_system}
    # One rule: the Task carries that rule's code too.
    single = decided(ServiceCategory.medical)
    out = build_referral_body(
        referral_id=uuid.uuid4(),
        partner_id="hogar-refugio-mdd",
        decided=single,
        screening=s,
        respond_by=NOW,
        flags=frozenset(),
        referring_organisation="Caravana de la Vida",
        public_base_url=BASE,
        payload_format=PayloadFormat.fhir_r4,
        organisation=ORG,
    )
    task = one(validate(out.to_bytes()), "Task")
    assert task["reasonCode"]["coding"] == [{"system": rule_system, "code": "test.rule"}]
