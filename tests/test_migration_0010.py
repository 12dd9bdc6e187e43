"""Revision 0010 converts existing rows both ways: a decision, its referrals, the screening
and the outbox digests read back the same through the models before and after."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from alembic import command
from fastapi import FastAPI
from sqlalchemy import select, text

from app.migrations import alembic_config
from app.models import Decision, Delivery, Referral, Screening
from tests.conftest import KeyFactory
from tests.delivery.conftest import add_partner, submit
from tests.delivery.partner_server import PartnerServer


async def _stored(app: FastAPI) -> dict[str, Any]:
    async with app.state.sessionmaker() as session:
        decisions = (await session.execute(select(Decision))).scalars().all()
        referrals = (await session.execute(select(Referral))).scalars().all()
        screenings = (await session.execute(select(Screening))).scalars().all()
        deliveries = (await session.execute(select(Delivery))).scalars().all()
        return {
            "trace": {str(d.id): d.trace for d in decisions},
            "reasons": {str(r.id): r.reasons for r in referrals},
            "match": {str(r.id): r.match for r in referrals},
            "data": {str(s.id): s.data for s in screenings},
            "digests": {str(d.id): d.body_sha256 for d in deliveries},
        }


async def test_0010_converts_rows_up_and_down(
    app: FastAPI,
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    database_url: str,
    partner_server: PartnerServer,
) -> None:
    await add_partner(http, api_key, "hospital-a", partner_server.url)
    receipt = await submit(http, api_key)
    written = await _stored(app)
    assert written["trace"]
    assert written["reasons"]
    assert written["digests"]
    detail = await http.get(
        f"/v1/referrals/{receipt['decision']['referrals'][0]['id']}",
        headers={"Authorization": f"Bearer {await api_key('auditor')}"},
    )
    assert detail.status_code == 200, detail.text
    config = alembic_config(database_url)
    await asyncio.to_thread(command.downgrade, config, "0009")
    async with app.state.sessionmaker() as session:
        # The form before 0010: JSON text, hex digests.
        trace = (await session.execute(text("SELECT trace FROM decisions"))).scalar_one()
        digest = (await session.execute(text("SELECT body_sha256 FROM deliveries"))).scalars()
        parsed = trace if isinstance(trace, dict) else json.loads(trace)
    assert parsed == next(iter(written["trace"].values()))
    assert set(digest) <= set(written["digests"].values())
    await asyncio.to_thread(command.upgrade, config, "head")
    assert await _stored(app) == written
    again = await http.get(
        f"/v1/referrals/{receipt['decision']['referrals'][0]['id']}",
        headers={"Authorization": f"Bearer {await api_key('auditor')}"},
    )
    assert again.json()["decision"] == detail.json()["decision"]
    assert again.json()["match"] == detail.json()["match"]
