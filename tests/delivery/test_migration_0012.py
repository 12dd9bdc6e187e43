"""Revision 0012 replaces the outbox's full indexes by partial ones, both ways, on SQLite and
PostgreSQL: the rows are claimed and delivered after the round trip; and on PostgreSQL the
queries that read pending work, dead letters and notices can read them through those
indexes (their predicates are written as the indexes' are)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from alembic import command
from fastapi import FastAPI
from sqlalchemy import event, inspect, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.delivery import outbox
from app.delivery.worker import DeliveryWorker
from app.migrations import alembic_config
from app.models import Delivery
from app.models.base import utcnow
from tests.conftest import KeyFactory
from tests.delivery.conftest import add_partner, deliveries, submit
from tests.delivery.partner_server import PartnerServer

PARTIAL = {
    "ix_deliveries_claim",
    "ix_deliveries_pending_partner",
    "ix_deliveries_dead",
    "ix_deliveries_notices",
}


async def _indexes(app: FastAPI) -> dict[str, list[str | None]]:
    engine: AsyncEngine = app.state.engine
    async with engine.connect() as conn:
        found = await conn.run_sync(lambda sync: inspect(sync).get_indexes("deliveries"))
    return {str(i["name"]): list(i["column_names"]) for i in found}


async def test_0012_replaces_the_outbox_indexes_both_ways(
    app: FastAPI,
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    database_url: str,
    partner_server: PartnerServer,
    worker: DeliveryWorker,
) -> None:
    await add_partner(http, api_key, "hospital-a", partner_server.url)
    await submit(http, api_key)
    pending = {d.id for d in await deliveries(app)}
    assert pending
    assert set(await _indexes(app)) >= PARTIAL
    config = alembic_config(database_url)
    await asyncio.to_thread(command.downgrade, config, "0011")
    before = await _indexes(app)
    assert before["ix_deliveries_claim"] == ["status", "urgency_rank", "next_attempt_at"]
    assert before["ix_deliveries_partner_status"] == ["partner_id", "status"]
    assert not (PARTIAL - {"ix_deliveries_claim"}) & set(before)
    await asyncio.to_thread(command.upgrade, config, "0012")
    after = await _indexes(app)
    assert after["ix_deliveries_claim"] == ["urgency_rank", "next_attempt_at"]
    assert "ix_deliveries_partner_status" not in after
    await asyncio.to_thread(command.upgrade, config, "head")
    # Every row written before the round trip is still found as pending work, and delivered.
    async with app.state.sessionmaker() as session:
        found = set((await session.execute(select(Delivery.id).where(outbox.IS_PENDING))).scalars())
    assert found == pending
    while await worker.run_once():
        pass
    assert {d.status for d in await deliveries(app)} == {"delivered"}
    assert len(partner_server.received) == len(pending)


class _Statements:
    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def __call__(self, _c: Any, _cur: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().lower().startswith("select") and "deliveries" in statement:
            self.seen.append((statement, parameters))


async def _index_used(engine: AsyncEngine, statement: str, parameters: Any) -> set[str]:
    """The indexes a plan reads, with sequential scans priced out: a partial index whose
    predicate the statement does not imply cannot be chosen, however they are priced."""
    async with engine.connect() as conn:
        await conn.exec_driver_sql("SET enable_seqscan = off")
        result = await conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, parameters)
        document = result.scalar_one()
    plan = (json.loads(document) if isinstance(document, str) else document)[0]["Plan"]
    names: set[str] = set()
    stack = [plan]
    while stack:
        node = stack.pop()
        if "Index Name" in node:
            names.add(node["Index Name"])
        stack.extend(node.get("Plans", []))
    return names


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # the PG planner
async def test_the_outbox_queries_read_the_partial_indexes(
    app: FastAPI,
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    partner_server: PartnerServer,
    database_url: str,
) -> None:
    await add_partner(http, api_key, "hospital-a", partner_server.url)
    await submit(http, api_key)
    engine: AsyncEngine = app.state.engine
    async with app.state.sessionmaker() as session:
        one = (await session.execute(select(Delivery.id).limit(1))).scalar_one()
        await session.execute(update(Delivery).where(Delivery.id == one).values(status="dead"))
        await session.commit()
    statements = _Statements()
    event.listen(engine.sync_engine, "before_cursor_execute", statements)
    try:
        async with app.state.sessionmaker() as session:
            await outbox.claim(session, worker_id="plan", now=utcnow(), config=outbox.ClaimConfig())
            await session.rollback()
        dead = await http.get(
            "/v1/deliveries/dead-letters",
            headers={"Authorization": f"Bearer {await api_key('admin')}"},
        )
        assert dead.status_code == 200, dead.text
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", statements)
    used = [await _index_used(engine, s, p) for s, p in statements.seen]
    everything = set().union(*used)
    assert {"ix_deliveries_claim", "ix_deliveries_pending_partner", "ix_deliveries_dead"} <= (
        everything
    ), statements.seen
