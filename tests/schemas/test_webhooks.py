"""What partners receive, as the OpenAPI document describes it: real bodies built by the
minimiser (over generated screenings, every service, basis, recipient, format, full and
thin) validate against the published webhook schemas and the details response, and against
the models behind them (tests/delivery/test_published_schemas.py does the same for bodies
delivered to a partner on loopback)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from functools import cache
from typing import Any

import jsonschema_rs
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from app.partners.directory import Organisation, PayloadFormat
from app.partners.minimiser import (
    build_notice_body,
    build_notification_body,
    build_referral_body,
    default_policy,
)
from app.schemas import webhooks
from app.schemas.decision import LegalBasis, Recipient, ReferralFlag, Urgency
from app.schemas.screening import ScreeningIn, ServiceCategory
from tests.partners.helpers import decided
from tests.partners.test_minimiser import screenings
from tests.test_openapi import document

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
BASE = "https://ruta.example.org"
ORG = Organisation(id="hogar-refugio", name="Hogar Refugio (invented)")


@cache
def _validator(event: str, media: str) -> Any:
    """The published schema of ``event`` (a webhook name, or ``details`` for the details
    response) in ``media``, resolving #/components in the document."""
    doc = document()
    if event == "details":
        operation = doc["paths"]["/v1/referrals/{referral_id}/details"]["get"]
        schema = operation["responses"]["200"]["content"][media]["schema"]
    else:
        schema = doc["webhooks"][event]["post"]["requestBody"]["content"][media]["schema"]
    return jsonschema_rs.Draft202012Validator(
        {**schema, "components": doc["components"]}, validate_formats=True
    )


def check(event: str, raw: bytes) -> dict[str, Any]:
    """``raw`` validates against what the document publishes for ``event``, and (for
    ruta-json) against the model behind it."""
    body: dict[str, Any] = json.loads(raw)
    fhir = body.get("resourceType") == "Bundle"
    media = "application/fhir+json" if fhir else "application/json"
    errors = [f"{e.instance_path}: {e.message}" for e in _validator(event, media).iter_errors(body)]
    assert not errors, (event, media, errors[:3])
    if fhir:
        webhooks.FhirBundle.model_validate(body)
    else:
        assert body["type"] == ("referral.details" if event == "details" else event)
        webhooks.model_for(body).model_validate(body)
    return body


def test_the_shared_screening_has_exactly_the_fields_the_policy_lets_leave() -> None:
    """SharedScreening is written by hand; the policy is the truth. A field added to either
    alone fails here."""

    def paths(model: type[Any], prefix: str = "") -> set[str]:
        found: set[str] = set()
        for name, field in model.model_fields.items():
            nested = [
                a
                for a in getattr(field.annotation, "__args__", ())
                if isinstance(a, type) and issubclass(a, webhooks.Sent)
            ]
            found |= paths(nested[0], f"{prefix}{name}.") if nested else {prefix + name}
        return found

    policy = default_policy()
    allowed = {
        p
        for category in policy.categories.values()
        for p in category
        if not p.startswith("safety.safe_contact.")
    }
    assert paths(webhooks.SharedScreening) == allowed


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    screenings(),
    st.sampled_from(list(ServiceCategory)),
    st.sampled_from(list(LegalBasis)),
    st.sampled_from(list(Recipient)),
    st.booleans(),
    st.frozensets(st.sampled_from(list(ReferralFlag))),
)
def test_every_referral_body_matches_its_published_schema(
    s: ScreeningIn,
    service: ServiceCategory,
    basis: LegalBasis,
    recipient: Recipient,
    withdrawn: bool,
    flags: frozenset[ReferralFlag],
) -> None:
    referral = decided(
        service,
        urgency=Urgency.emergency,
        basis=basis,
        identifying=basis is not LegalBasis.consent,
        flags=flags,
        recipient=recipient,
    )
    for payload_format in PayloadFormat:
        for thin, event in ((False, "referral.created"), (True, "referral.created")):
            for kind in (event, "referral.details"):
                if kind == "referral.details" and thin:
                    continue
                out = build_referral_body(
                    referral_id=uuid.uuid4(),
                    partner_id="hogar-refugio-mdd",
                    decided=referral,
                    screening=s,
                    respond_by=NOW,
                    flags=flags,
                    referring_organisation="Caravana de la Vida",
                    public_base_url=BASE,
                    thin=thin,
                    event=kind,  # type: ignore[arg-type]
                    payload_format=payload_format,
                    organisation=ORG,
                    consent_withdrawn=withdrawn and basis is not LegalBasis.consent,
                )
                check("details" if kind == "referral.details" else event, out.to_bytes())


@pytest.mark.parametrize("payload_format", list(PayloadFormat))
@pytest.mark.parametrize("basis", [None, "child_protection_duty", "vital_interest"])
def test_every_notice_matches_its_published_schema(
    payload_format: PayloadFormat, basis: str | None
) -> None:
    kind = "referral.revoked" if basis is None else "referral.consent_withdrawn"
    raw = build_notice_body(
        kind=kind,  # type: ignore[arg-type]
        referral_id=uuid.uuid4(),
        partner_id="hogar-refugio-mdd",
        legal_basis=basis,
        payload_format=payload_format,
        organisation=ORG,
        public_base_url=BASE,
    )
    check(kind, raw)


@hsettings(max_examples=100, deadline=None)
@given(screenings())
def test_every_notification_matches_its_published_schema(s: ScreeningIn) -> None:
    raw, _ = build_notification_body(
        notification_id=uuid.uuid4(),
        screening=s,
        referring_organisation="Caravana de la Vida",
        now=NOW,
    )
    check("notification.created", raw)


def test_a_field_the_schemas_do_not_know_is_refused() -> None:
    """The schemas are closed: a body with an undocumented field does not validate."""
    body = json.loads(
        build_notice_body(kind="referral.revoked", referral_id=uuid.uuid4(), partner_id="p-x")
    )
    body["referral"]["notes"] = "anything"
    with pytest.raises(AssertionError):
        check("referral.revoked", json.dumps(body).encode())
