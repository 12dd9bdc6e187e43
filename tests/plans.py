"""Query plans of the list endpoints on PostgreSQL, for tests/referrals/test_list_plans.py
and tests/audit/test_list_plans.py.

A database of realistic shape: screenings posted through the real batch endpoint, then
copied in SQL (bench/queries.py's replication) to some twenty thousand referrals and
ANALYZEd, so the planner weighs a sequential scan against the indexes with true
statistics (no ``enable_seqscan = off``: the tests must be able to fail). Each request's
statements on the listed tables are captured as sent (SQLAlchemy's cursor events) and
EXPLAINed with the same parameters.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench import queries as bench
from tests.conftest import TEST_SECRET, bearer, key_factory

#: Nodes that mean the page was not read in index order: every matching row was read,
#: then sorted (or scanned from the heap in physical order).
BAD_NODES = ("Seq Scan", "Sort", "Incremental Sort", "Bitmap Heap Scan")


@dataclass
class Captured:
    tables: tuple[str, ...]
    statements: list[tuple[str, Any]] = field(default_factory=list)

    def __call__(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        lowered = statement.lower()
        if lowered.lstrip().startswith("select") and any(
            f"from {t}" in lowered or f"join {t}" in lowered for t in self.tables
        ):
            self.statements.append((statement, parameters))


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


async def explain(engine: AsyncEngine, statement: str, parameters: Any) -> dict[str, Any]:
    async with engine.connect() as conn:
        result = await conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, parameters)
        document = result.scalar_one()
    found = json.loads(document) if isinstance(document, str) else document
    return dict(found[0]["Plan"])


def bad_nodes(plan: dict[str, Any]) -> list[str]:
    return [
        f"{n['Node Type']} on {n.get('Relation Name', '?')}"
        for n in nodes(plan)
        if n["Node Type"] in BAD_NODES and not sorts_ties_only(n)
    ]


#: A filter the planner expects at most this many rows of may be read by bitmap and sorted:
#: sorting a thousand rows takes about a millisecond. With more, it may not: every row
#: would be read and sorted before the first page (bench.queries holds the same queries to
#: 100 ms at a million referrals, where such a filter has fifty times as many rows).
FEW_ROWS = 1000


def bad_unless_few(plan: dict[str, Any]) -> list[str]:
    """:func:`bad_nodes`, but a bitmap read and sort of a filter the planner expects few
    rows of (:data:`FEW_ROWS`) passes; a sequential scan never does."""
    bad = bad_nodes(plan)
    bitmaps = [n for n in nodes(plan) if n["Node Type"] == "Bitmap Heap Scan"]
    few = bool(bitmaps) and all(n.get("Plan Rows", FEW_ROWS + 1) <= FEW_ROWS for n in bitmaps)
    if few:
        return [b for b in bad if b.startswith("Seq Scan")]
    return bad


def sorts_ties_only(node: dict[str, Any]) -> bool:
    """An incremental sort over the index order whose presorted key is the page order's
    first column (``created_at``, ``updated_at``): it puts rows that tie on it in ``id``
    order a few at a time as they are read (migration 0017's indexes leave ``id`` out), and
    reads no more rows than the page needs. A full sort has no presorted key."""
    presorted = node.get("Presorted Key") or []
    return node["Node Type"] == "Incremental Sort" and presorted[:1] in (
        ["created_at"],
        ["updated_at"],
        ["referrals.created_at"],
        ["referrals.updated_at"],
    )


def index_range_on(plan: dict[str, Any], column: str) -> bool:
    """Whether an index scan's condition (not a filter on the rows it read) holds ``column``."""
    return any(column in n.get("Index Cond", "") for n in nodes(plan))


async def fill(app: FastAPI, postgres_url: str, screenings: int, referrals: int) -> str:
    """Post ``screenings`` through the real batch endpoint, copy them in SQL up to about
    ``referrals`` referrals, ANALYZE; return an auditor's key."""
    make_key = key_factory(app, app.state.settings)
    clinic = await make_key("clinic", "Caravana de la Vida")
    auditor = await make_key("auditor")
    rng = random.Random(7)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ruta.test") as client:
        for start in range(0, screenings, 50):
            batch = [bench.varied_screening(rng) for _ in range(min(50, screenings - start))]
            response = await client.post(
                "/v1/screenings/batch", json={"screenings": batch}, headers=bearer(clinic)
            )
            assert response.status_code == 200, response.text
            assert response.json()["failed"] == 0, response.text
    real, _events, t0, t1 = await bench.counts(postgres_url)
    copies = max(0, -(-referrals // real) - 1)
    engine: AsyncEngine = app.state.engine
    async with engine.connect() as conn:
        await bench.replicate(conn, copies, t0, t1)
    async with engine.connect() as conn:
        await conn.execute(text("COMMIT"))
        for table in ("referrals", "audit_events", "screenings", "subjects", "decisions"):
            await conn.execute(text(f"ANALYZE {table}"))
    return auditor


async def plans_of(
    app: FastAPI,
    client: httpx.AsyncClient,
    key: str,
    path: str,
    params: dict[str, str],
    tables: tuple[str, ...],
) -> list[tuple[str, dict[str, Any]]]:
    """The statements one GET runs on ``tables``, each with its plan."""
    captured = Captured(tables)
    engine: AsyncEngine = app.state.engine
    event.listen(engine.sync_engine, "before_cursor_execute", captured)
    try:
        response = await client.get(path, params=params, headers=bearer(key))
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", captured)
    assert response.status_code == 200, response.text
    assert captured.statements, f"no statement on {tables} for {path} {params}"
    return [(s, await explain(engine, s, p)) for s, p in captured.statements]


def settings_for(postgres_url: str, tmp_path: Path) -> Any:
    from app.settings import Environment, Settings

    return Settings(
        env=Environment.test,
        database_url=postgres_url,
        secret_key=TEST_SECRET,  # type: ignore[arg-type]
        embedded_worker=False,
        partners_path=bench.write_partners(tmp_path / "directory.yaml"),
    )
