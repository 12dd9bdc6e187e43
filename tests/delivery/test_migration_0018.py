"""Revision 0018: the claim reads the outbox in its index's order.

* Both ways on SQLite and PostgreSQL: 0012's shapes on downgrade, 0018's on upgrade, and
  the rows written before the round trip are still claimed and delivered.
* The claim's order is the protocol's (emergencies first, then the earliest due, then the
  oldest) over a backlog of generated deliveries, claim after claim, on both engines.
* On PostgreSQL, with a backlog of thousands of pending rows and true statistics, the claim
  is one range of ``ix_deliveries_claim`` with no sort (0012's index made every claim read
  and sort the whole backlog), and its count of live leases is a range of unexpired leases
  in ``ix_deliveries_pending_partner``.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from alembic import command
from fastapi import FastAPI
from sqlalchemy import delete, event, inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.delivery import outbox
from app.delivery.worker import DeliveryWorker
from app.migrations import alembic_config
from app.models import Delivery
from app.models.base import utcnow
from tests.conftest import KeyFactory
from tests.delivery.conftest import add_partner, deliveries, submit
from tests.delivery.partner_server import PartnerServer
from tests.plans import Captured, nodes

#: The mapped attributes of a delivery row (``webhook_id`` is mapped as stored_webhook_id).
ATTRIBUTES = [a.key for a in inspect(Delivery).column_attrs]


async def _index(app: FastAPI, name: str) -> dict[str, Any]:
    engine: AsyncEngine = app.state.engine
    async with engine.connect() as conn:
        found = await conn.run_sync(lambda sync: inspect(sync).get_indexes("deliveries"))
    return next(dict(i) for i in found if i["name"] == name)


async def _descending(app: FastAPI, name: str) -> set[str]:
    """The columns the index keeps in descending order (SQLite's reflection does not say:
    its stored definition is read instead)."""
    engine: AsyncEngine = app.state.engine
    if engine.dialect.name == "postgresql":
        sorting = (await _index(app, name)).get("column_sorting", {})
        return {column for column, how in sorting.items() if "desc" in how}
    async with engine.connect() as conn:
        sql = (
            await conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = ?", (name,))
        ).scalar_one()
    return {part.split()[0] for part in sql.split("(", 1)[1].split(",") if " DESC" in part}


async def test_0018_rebuilds_the_claim_indexes_both_ways(
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
    claim = await _index(app, "ix_deliveries_claim")
    assert claim["column_names"] == ["urgency_rank", "next_attempt_at", "created_at"]
    assert await _descending(app, "ix_deliveries_claim") == {"urgency_rank"}
    leases = await _index(app, "ix_deliveries_pending_partner")
    assert leases["column_names"] == ["partner_id", "lease_expires_at"]
    config = alembic_config(database_url)
    await asyncio.to_thread(command.downgrade, config, "0017")
    claim = await _index(app, "ix_deliveries_claim")
    assert claim["column_names"] == ["urgency_rank", "next_attempt_at"]
    assert await _descending(app, "ix_deliveries_claim") == set()
    assert (await _index(app, "ix_deliveries_pending_partner"))["column_names"] == ["partner_id"]
    await asyncio.to_thread(command.upgrade, config, "head")
    assert (await _index(app, "ix_deliveries_claim"))["column_names"][-1] == "created_at"
    while await worker.run_once():
        pass
    assert {d.status for d in await deliveries(app)} == {"delivered"}
    assert len(partner_server.received) == len(pending)


async def _backlog(app: FastAPI, rows: int, seed: int) -> list[Delivery]:
    """``rows`` pending deliveries copied from the one a screening wrote, with urgency,
    due time and creation time drawn at random (ties included); the original is removed."""
    rng = random.Random(seed)
    now = utcnow()
    async with app.state.sessionmaker() as session:
        template = (await session.execute(select(Delivery).limit(1))).scalar_one()
        values = {a: getattr(template, a) for a in ATTRIBUTES}
        await session.execute(delete(Delivery))
        made = []
        for _ in range(rows):
            made.append(
                Delivery(
                    **{
                        **values,
                        "id": uuid.uuid4(),
                        "urgency_rank": rng.choice([0, 0, 0, 1, 1, 2]),
                        "next_attempt_at": now - timedelta(seconds=rng.randrange(0, 50)),
                        "created_at": now - timedelta(seconds=rng.randrange(0, 50)),
                        "status": outbox.PENDING,
                        "lease_owner": None,
                        "lease_expires_at": None,
                    }
                )
            )
        session.add_all(made)
        await session.commit()
    return made


def _protocol_order(rows: list[Delivery]) -> list[uuid.UUID]:
    """Emergencies first, then the earliest due, then the oldest (ties in any order)."""
    return [
        d.id for d in sorted(rows, key=lambda d: (-d.urgency_rank, d.next_attempt_at, d.created_at))
    ]


def _keys(rows: list[Delivery], ids: list[uuid.UUID]) -> list[tuple[Any, ...]]:
    by_id = {d.id: d for d in rows}
    return [(-by_id[i].urgency_rank, by_id[i].next_attempt_at, by_id[i].created_at) for i in ids]


async def test_claims_come_in_the_protocol_order_over_a_backlog(
    app: FastAPI,
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    partner_server: PartnerServer,
) -> None:
    await add_partner(http, api_key, "hospital-a", partner_server.url)
    await submit(http, api_key)
    rows = await _backlog(app, 120, seed=18)
    config = outbox.ClaimConfig(batch=7, per_partner_cap=1000)
    claimed: list[uuid.UUID] = []
    for _ in range(40):
        async with app.state.sessionmaker() as session:
            taken = await outbox.claim(session, worker_id="order", now=utcnow(), config=config)
            await session.commit()
        if not taken:
            break
        claimed += [d.id for d in taken]
    assert sorted(claimed) == sorted(d.id for d in rows)
    # The same sequence of keys as the protocol's order (rows with equal keys may swap).
    assert _keys(rows, claimed) == _keys(rows, _protocol_order(rows))


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # the PG planner
async def test_a_claim_over_a_backlog_reads_an_index_range_without_sorting(
    app: FastAPI,
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    partner_server: PartnerServer,
    database_url: str,
) -> None:
    await add_partner(http, api_key, "hospital-a", partner_server.url)
    await submit(http, api_key)
    await _backlog(app, 4000, seed=4000)
    engine: AsyncEngine = app.state.engine
    async with engine.connect() as conn:
        await conn.exec_driver_sql("ANALYZE")  # true statistics, as autovacuum keeps them
        await conn.commit()
    statements = Captured(("deliveries",))
    event.listen(engine.sync_engine, "before_cursor_execute", statements)
    try:
        async with app.state.sessionmaker() as session:
            taken = await outbox.claim(
                session, worker_id="plan", now=utcnow(), config=outbox.ClaimConfig()
            )
            await session.rollback()
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", statements)
    assert taken
    plans = []
    async with engine.connect() as conn:
        for statement, parameters in statements.statements:
            result = await conn.exec_driver_sql(
                "EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters
            )
            document = result.scalar_one()
            found = json.loads(document) if isinstance(document, str) else document
            plans.append((statement, list(nodes(found[0]["Plan"]))))
        await conn.rollback()
    claim = next(nodes for s, nodes in plans if "FOR UPDATE" in s)
    shown = [(n["Node Type"], n.get("Relation Name"), n.get("Index Name")) for n in claim]
    assert not {n["Node Type"] for n in claim} & {"Sort", "Incremental Sort"}, shown
    scans = [n for n in claim if n.get("Relation Name") == "deliveries"]
    assert [(n["Node Type"], n.get("Index Name")) for n in scans] == [
        ("Index Scan", "ix_deliveries_claim")
    ], shown
    # It read about the rows it took, not the 4,000 pending ones.
    assert scans[0]["Actual Rows"] <= 3 * outbox.ClaimConfig().batch
    count = next(nodes for s, nodes in plans if "count(" in s.lower())
    leases = [n for n in count if n.get("Relation Name") == "deliveries"]
    assert [n.get("Index Name") for n in leases] == ["ix_deliveries_pending_partner"]
    assert "lease_expires_at" in leases[0].get("Index Cond", ""), leases[0]
