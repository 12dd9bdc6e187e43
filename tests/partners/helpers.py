"""Builders for partners and decided referrals in tests."""

from __future__ import annotations

from typing import Any

from app.partners.directory import Partner
from app.schemas.decision import (
    DecidedReferral,
    LegalBasis,
    Reason,
    Recipient,
    ReferralFlag,
    Urgency,
)
from app.schemas.screening import ServiceCategory

#: The ordinary provider role for a service, when a test does not say.
PROVIDER_ROLE = {
    "medical": "health_facility",
    "psychological": "psychosocial",
    "legal": "legal_aid",
    "protection": "shelter",
}


def partner(pid: str, **overrides: Any) -> Partner:
    services = overrides.get("services", ["medical"])
    data: dict[str, Any] = {
        "id": pid,
        "organisation": {"id": pid, "name": f"Org {pid}"},
        "name": f"Service {pid}",
        "role": PROVIDER_ROLE[services[0]] if services else "notification_recipient",
        "services": ["medical"],
        "service_area": {"regions": ["madre_de_dios"]},
        "languages": ["es"],
        "capacity": {"available": 5, "maximum": 10},
        "endpoint": {"url": f"https://{pid}.example.org/ruta"},
        "priority": 100,
    }
    data.update(overrides)
    return Partner.model_validate(data)


def decided(
    service: ServiceCategory = ServiceCategory.medical,
    *,
    urgency: Urgency = Urgency.urgent,
    basis: LegalBasis = LegalBasis.consent,
    identifying: bool = False,
    flags: frozenset[ReferralFlag] = frozenset(),
    recipient: Recipient = Recipient.provider,
) -> DecidedReferral:
    return DecidedReferral(
        service=service,
        recipient=recipient,
        urgency=urgency,
        legal_basis=basis,
        identifying=identifying,
        flags=flags,
        reasons=(
            Reason(
                rule_id="test.rule",
                guideline="docs/protocol.md#test",
                text={"es": "Motivo de prueba", "en": "Test reason"},
                urgency=urgency,
                legal_basis=basis,
            ),
        ),
    )
