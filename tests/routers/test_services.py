"""GET /v1/services: the directory as Open Referral HSDS 3 services, paginated as the HSDS
API does, for admins and auditors; on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx

from app.schemas.hsds import ServicePage
from tests.conftest import KeyFactory, bearer
from tests.delivery.partner_server import SECRET
from tests.test_openapi import document, validator

URL = "https://partner.example.org/ruta"


def _partner(pid: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": pid,
        "organisation": {"id": f"org-{pid}", "name": f"Org {pid} (invented)"},
        "name": f"Service {pid}",
        "role": "shelter",
        "services": ["protection"],
        "service_area": {"regions": ["madre_de_dios"]},
        "languages": ["es", "qu"],
        "capacity": {"available": 2, "maximum": 8},
        "endpoint": {"url": URL, "secrets": [SECRET]},
    }
    body.update(overrides)
    return body


async def test_the_directory_as_hsds_services(http: httpx.AsyncClient, api_key: KeyFactory) -> None:
    admin = bearer(await api_key("admin"))
    partners = [
        _partner(
            "a-shelter",
            eligibility={"min_age": 18, "sexes": ["female"]},
            hours={
                "timezone": "America/Lima",
                "schedule": [{"days": ["mon", "tue"], "opens": "08:00", "closes": "17:00"}],
            },
        ),
        _partner(
            "b-authority",
            role="child_protection_authority",
            service_area={"national": True, "ubigeo_prefixes": ["1701"]},
        ),
        _partner("c-paused", role="health_facility", services=["medical"]),
    ]
    for body in partners:
        created = await http.post("/v1/partners", json=body, headers=admin)
        assert created.status_code == 201, created.text
    paused = await http.post("/v1/partners/c-paused/pause", headers=admin)
    assert paused.status_code == 200

    first = await http.get("/v1/services", params={"per_page": 2}, headers=admin)
    assert first.status_code == 200, first.text
    check = validator(document(), {"$ref": "#/components/schemas/ServicePage"})
    assert not [str(e) for e in check.iter_errors(first.json())]
    page = ServicePage.model_validate(first.json())
    assert (page.total_items, page.total_pages, page.page_number, page.size) == (3, 2, 1, 2)
    assert page.first_page
    assert not page.last_page
    second = ServicePage.model_validate(
        (await http.get("/v1/services", params={"per_page": 2, "page": 2}, headers=admin)).json()
    )
    assert second.last_page
    assert second.size == 1
    services = {
        next(a.value for a in s.attributes if a.link_type == "ruta_partner_id"): s
        for s in [*page.contents, *second.contents]
    }
    assert set(services) == {"a-shelter", "b-authority", "c-paused"}

    def role(pid: str) -> str | None:
        roles = [a.value for a in services[pid].attributes if a.link_type == "ruta_partner_role"]
        return roles[0] if roles else None

    assert role("a-shelter") == "shelter"
    assert role("b-authority") == "child_protection_authority"
    shelter = services["a-shelter"]
    assert shelter.status == "active"
    assert services["c-paused"].status == "inactive"
    assert (shelter.minimum_age, shelter.maximum_age) == (18, None)
    assert [(s.byday, s.opens_at, s.closes_at, s.timezone) for s in shelter.schedules] == [
        ("MO,TU", "08:00-05:00", "17:00-05:00", -5.0)
    ]
    assert [lang.code for lang in shelter.languages] == ["es", "qu"]
    assert [a.name for a in shelter.service_areas] == ["madre_de_dios"]
    assert shelter.organization.identifiers[0].identifier == "org-a-shelter"
    assert shelter.capacities[0].available == 2
    areas = {a.name: a for a in services["b-authority"].service_areas}
    assert set(areas) == {"Peru", "1701"}
    assert areas["1701"].extent_type == "ubigeo"
    # Never an endpoint or a secret.
    assert URL not in first.text
    assert "whsec_" not in first.text
    # Stable ids: the same entry, the same UUIDs.
    again = ServicePage.model_validate(
        (await http.get("/v1/services", params={"per_page": 2}, headers=admin)).json()
    )
    assert [s.id for s in again.contents] == [s.id for s in page.contents]

    auditor = await http.get("/v1/services", headers=bearer(await api_key("auditor")))
    assert auditor.status_code == 200
    for role_name, org in (("clinic", "Caravana de la Vida"), ("partner", "org-a-shelter")):
        refused = await http.get("/v1/services", headers=bearer(await api_key(role_name, org)))
        assert refused.status_code == 403
    beyond = await http.get("/v1/services", params={"page": 0}, headers=admin)
    assert beyond.status_code == 422
    assert [e["path"] for e in beyond.json()["errors"]] == ["query.page"]
    empty = ServicePage.model_validate(
        (await http.get("/v1/services", params={"page": 9}, headers=admin)).json()
    )
    assert empty.empty
    assert empty.contents == []
