"""Revision 0016 both ways: a referral's flags, data categories and partners tried read back
the same through the models before and after, stored packed; a delivery keeps the
``webhook-id`` it was sent with across a downgrade and an upgrade, and a row written before
0016 keeps its stored random id, which the worker still sends."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
from alembic import command
from fastapi import FastAPI
from sqlalchemy import inspect, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app import compact
from app.delivery.worker import DeliveryWorker
from app.migrations import alembic_config
from app.models import Delivery, Referral
from tests.conftest import KeyFactory
from tests.delivery.conftest import add_partner, submit
from tests.delivery.partner_server import PartnerServer

LISTS = ("flags", "data_categories", "tried_partner_ids")


async def _lists(app: FastAPI) -> dict[str, dict[str, list[str]]]:
    async with app.state.sessionmaker() as session:
        referrals = (await session.execute(select(Referral))).scalars().all()
        return {str(r.id): {c: getattr(r, c) for c in LISTS} for r in referrals}


async def _webhook_ids(app: FastAPI) -> dict[uuid.UUID, str]:
    async with app.state.sessionmaker() as session:
        return {d.id: d.webhook_id for d in (await session.execute(select(Delivery))).scalars()}


async def _raw(session: AsyncSession, sql: str) -> list[Any]:
    return list((await session.execute(text(sql))).all())


async def _indexes(app: FastAPI, table: str) -> set[str]:
    async with app.state.sessionmaker() as session:
        connection = await session.connection()
        found = await connection.run_sync(lambda c: inspect(c).get_indexes(table))
        return {i["name"] for i in found if i["name"]}


async def _at_0013_as_before(app: FastAPI, referral_id: str, old_id: str) -> None:
    """What a database upgraded to 0013 holds: JSON lists, every webhook id stored; one
    referral tried a partner, one delivery has a random id (as all had before 0016)."""
    async with app.state.sessionmaker() as session:
        for flags, categories in await _raw(
            session, "SELECT flags, data_categories FROM referrals"
        ):
            parsed = flags if isinstance(flags, list) else json.loads(flags)
            assert isinstance(parsed, list)
            assert isinstance(
                categories if isinstance(categories, list) else json.loads(categories), list
            )
        ids = await _raw(session, "SELECT id, webhook_id FROM deliveries")
        # Downgraded, each row stores the id it was sent with: code before 0016 sends it too.
        assert all(w == f"msg_{uuid.UUID(str(i)).hex}" for i, w in ids)
        json_cast = "CAST(:v AS jsonb)" if session.get_bind().dialect.name == "postgresql" else ":v"
        await session.execute(
            text(f"UPDATE referrals SET tried_partner_ids = {json_cast} WHERE id = :r"),  # noqa: S608
            {"v": json.dumps(["shelter-north", "hospital-ü"]), "r": _key(session, referral_id)},
        )
        await session.execute(
            text("UPDATE deliveries SET webhook_id = :w WHERE id = :d"),
            {"w": old_id, "d": _key(session, str(ids[0][0]))},
        )
        await session.commit()


def _key(session: AsyncSession, value: str) -> Any:
    """A UUID as the table stores it (native on PostgreSQL, 32 hex digits on SQLite)."""
    as_uuid = uuid.UUID(value)
    return as_uuid if session.get_bind().dialect.name == "postgresql" else as_uuid.hex


async def test_0016_converts_rows_up_and_down(
    app: FastAPI,
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    database_url: str,
    partner_server: PartnerServer,
    worker: DeliveryWorker,
) -> None:
    await add_partner(http, api_key, "hospital-a", partner_server.url, services=["medical"])
    receipt = await submit(http, api_key)
    written = await _lists(app)
    assert any(v["flags"] for v in written.values())
    assert any(v["data_categories"] for v in written.values())
    sent = await _webhook_ids(app)
    assert sent
    assert all(w == f"msg_{d.hex}" for d, w in sent.items())
    async with app.state.sessionmaker() as session:
        for row in await _raw(
            session, "SELECT flags, data_categories, tried_partner_ids FROM referrals"
        ):
            assert all(isinstance(v, bytes) for v in row)
            assert all(compact.unpack_json(v) == json.loads(compact.unpack(v)) for v in row)
            assert bytes(row[2]) == b"\x00[]"  # no partner tried yet: "[]" as is, 3 bytes
    assert "ix_referrals_partner_status" not in await _indexes(app, "referrals")

    config = alembic_config(database_url)
    await asyncio.to_thread(command.downgrade, config, "0013")
    assert "ix_referrals_partner_status" in await _indexes(app, "referrals")
    referral_id = receipt["decision"]["referrals"][0]["id"]
    old_id = f"msg_{uuid.uuid4().hex}"
    await _at_0013_as_before(app, referral_id, old_id)

    await asyncio.to_thread(command.upgrade, config, "head")
    written[referral_id]["tried_partner_ids"] = ["shelter-north", "hospital-ü"]
    assert await _lists(app) == written
    after = await _webhook_ids(app)
    assert set(after.values()) - set(sent.values()) == {old_id}
    [changed] = [d for d, w in after.items() if w == old_id]
    assert {d: w for d, w in after.items() if d != changed} == {
        d: w for d, w in sent.items() if d != changed
    }
    await worker.run_once()
    received = {r.headers["webhook-id"] for r in partner_server.received}
    assert old_id in received
    assert received <= set(after.values())
