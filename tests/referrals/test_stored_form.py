"""Decisions and referrals read back from their compact stored form (revision 0010) are
what was decided: the trace an auditor replays, and the reasons in Spanish and English."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from sqlalchemy import select, text

from app import compact
from app.models import Decision
from tests.conftest import KeyFactory, bearer
from tests.factories import screening


async def test_decision_and_reasons_read_back_as_decided(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    clinic = await api_key("clinic", "Caravana de la Vida")
    auditor = await api_key("auditor")
    document = screening()
    posted = {}
    for language in ("es", "en"):
        headers = {**bearer(clinic), "Accept-Language": language}
        response = await http.post("/v1/screenings", json=document, headers=headers)
        assert response.status_code in (200, 201), response.text
        posted[language] = response.json()
    decision = posted["es"]["decision"]
    assert decision["referrals"]
    for language in ("es", "en"):
        headers = {**bearer(clinic), "Accept-Language": language}
        shown = (await http.get(f"/v1/screenings/{document['id']}", headers=headers)).json()
        assert shown["decision"]["trace"] == posted[language]["decision"]["trace"]
        reasons = {r["id"]: r["reasons"] for r in shown["decision"]["referrals"]}
        assert reasons == {r["id"]: r["reasons"] for r in posted[language]["decision"]["referrals"]}
        for item in decision["referrals"]:
            detail = await http.get(
                f"/v1/referrals/{item['id']}",
                headers={**bearer(auditor), "Accept-Language": language},
            )
            assert detail.status_code == 200, detail.text
            assert detail.json()["decision"]["trace"] == decision["trace"]
            assert detail.json()["reasons"] == item["reasons"]
    async with app.state.sessionmaker() as session:
        raw = (await session.execute(text("SELECT trace FROM decisions"))).scalar_one()
        row = (await session.execute(select(Decision))).scalar_one()
    # Stored compressed; the model reads back the trace the receipt showed, which names the
    # rule set it was decided under (what replaying the decision needs).
    assert bytes(raw)[0] == compact.CURRENT
    assert compact.unpack_json(bytes(raw)) == row.trace
    assert row.trace["rule_set_version"] == row.rule_set_version
    assert row.trace == decision["trace"]
