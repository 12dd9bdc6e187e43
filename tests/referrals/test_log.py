"""The referral log's filters on text columns are indexed by a four-byte hash on
PostgreSQL (migration 0017): values whose hashes collide must still be told apart."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import insert, select, text, update

from app.models import Referral
from app.models.partner import PartnerRow
from tests.conftest import KeyFactory, bearer
from tests.factories import screening

#: One hashtext() on PostgreSQL (found by enumeration; checked below).
COLLIDING = ("partner-19", "partner-54704")


def _partner(partner_id: str) -> dict[str, Any]:
    return {
        "id": partner_id,
        "organisation_id": partner_id,
        "organisation_name": partner_id,
        "name": partner_id,
        "role": "legal_aid",
        "services": ["legal"],
        "service_area": {"national": True, "regions": [], "ubigeo_prefixes": []},
        "eligibility": {"min_age": None, "max_age": None, "sexes": []},
        "languages": ["es"],
        "capacity_available": 1,
        "capacity_maximum": 1,
        "hours": {},
        "payload_format": "ruta-json",
        "thin": False,
        "status": "paused",
        "priority": 0,
        "source": "api",
    }


async def test_partners_whose_ids_collide_are_told_apart(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    clinic = await api_key("clinic", "Caravana de la Vida")
    auditor = await api_key("auditor")
    for _ in range(3):
        posted = await http.post("/v1/screenings", json=screening(), headers=bearer(clinic))
        assert posted.status_code in (200, 201), posted.text
    async with app.state.sessionmaker() as session:
        if session.get_bind().dialect.name == "postgresql":
            same = await session.execute(
                text("SELECT hashtext(:a) = hashtext(:b)"), {"a": COLLIDING[0], "b": COLLIDING[1]}
            )
            assert same.scalar_one(), "the two ids should collide for this test to mean much"
        for partner in COLLIDING:
            await session.execute(insert(PartnerRow).values(_partner(partner)))
        ids = list((await session.execute(select(Referral.id).order_by(Referral.id))).scalars())
        assert len(ids) >= 4
        expected: dict[str, set[str]] = {p: set() for p in COLLIDING}
        for n, referral in enumerate(ids):
            partner = COLLIDING[n % 2]
            expected[partner].add(str(referral))
            await session.execute(
                update(Referral).where(Referral.id == referral).values(partner_id=partner)
            )
        await session.commit()
    for partner in COLLIDING:
        page = await http.get(
            "/v1/referrals", params={"partner_id": partner}, headers=bearer(auditor)
        )
        assert page.status_code == 200, page.text
        assert {item["id"] for item in page.json()["items"]} == expected[partner]
