"""GET /v1/referrals reads every page through an index in page order, on PostgreSQL.

Each filter alone and the documented combinations, first page and a later one: the
statements the endpoint sends are EXPLAINed on a database of some twenty thousand referrals
with true statistics, and no plan may scan ``referrals`` sequentially or sort it (which
would read every matching row before returning a hundred), but for a filter the planner
expects at most a thousand rows of (``plans.FEW_ROWS``), which it may read by bitmap and
sort, and ties on ``created_at`` put in ``id`` order as they are read (migration 0017).
A partner's inbox too must read through its indexes. PostgreSQL only: the production
engine, whose planner the indexes of migrations 0011 and 0017 are for.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event

from app.auth import Principal
from app.main import create_app
from app.models import Role
from app.models.referral import OPEN_STATUSES_SQL
from app.referrals import inbox
from tests import plans
from tests.conftest import bearer

#: A window holding enough referrals that reading them all would matter (a fifth of the
#: data). For a window of a few dozen rows the planner rightly reads them by bitmap and sorts
#: them: that costs as little, whatever the table's size.
WINDOW = {"created_from": "{window_from}", "created_to": "{window_to}"}
CASES: dict[str, dict[str, str]] = {
    "no filter": {},
    "status": {"status": "completed"},
    "status (rare)": {"status": "on-hold"},
    "service": {"service": "legal"},
    "urgency": {"urgency": "emergency"},
    "partner_id": {"partner_id": "bench-medical"},
    "partner_id (regional)": {"partner_id": "bench-protection-madre-de-dios"},
    "region": {"region": "lima"},
    "region (rare)": {"region": "tumbes"},
    "urgency and region": {"urgency": "emergency", "region": "madre_de_dios"},
    "created_from": {"created_from": "{window_from}"},
    "created_to": {"created_to": "{window_to}"},
    "a time window": WINDOW,
    "service in a time window": {"service": "medical", **WINDOW},
    "region in a time window": {"region": "cusco", **WINDOW},
    "status of a partner": {"partner_id": "bench-medical", "status": "completed"},
}


async def test_every_filter_is_read_in_index_order(postgres_url: str, tmp_path: Path) -> None:
    app = create_app(plans.settings_for(postgres_url, tmp_path))
    async with app.router.lifespan_context(app):
        auditor = await plans.fill(app, postgres_url, screenings=400, referrals=20_000)
        async with app.state.engine.connect() as conn:
            low, high = (
                await conn.exec_driver_sql("SELECT min(created_at), max(created_at) FROM referrals")
            ).one()
        times = {
            "window_from": (low + (high - low) * 0.4).isoformat(),
            "window_to": (low + (high - low) * 0.6).isoformat(),
        }
        failures: list[str] = []
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ruta.test") as client:
            for name, template in CASES.items():
                params = {k: v.format(**times) for k, v in template.items()}
                first = await client.get(
                    "/v1/referrals", params={**params, "limit": "2"}, headers=bearer(auditor)
                )
                cursor = first.json()["next_cursor"]
                assert cursor, f"{name}: the data should hold more than two such referrals"
                for page, extra in (("first page", {}), ("later page", {"cursor": cursor})):
                    found = await plans.plans_of(
                        app, client, auditor, "/v1/referrals", {**params, **extra}, ("referrals",)
                    )
                    for statement, plan in found:
                        if bad := plans.bad_unless_few(plan):
                            failures.append(f"{name}, {page}: {bad}\n{statement}\n{plan}")
                        if page == "later page" and not plans.index_range_on(plan, "created_at"):
                            failures.append(f"{name}, {page}: the cursor is not an index range")
        for organisation in ("bench-medical", "bench-protection-madre-de-dios"):
            failures += await inbox_failures(app, organisation)
    assert not failures, "\n\n".join(failures)


async def inbox_failures(app: FastAPI, organisation: str) -> list[str]:
    """A partner's inbox (the console's page): the open and the closed referrals of the
    organisation's partners, each read through its partial index, a partner and an urgency
    at a time; only the merged few hundred rows are sorted."""
    captured = plans.Captured(("referrals",))
    engine = app.state.engine
    event.listen(engine.sync_engine, "before_cursor_execute", captured)
    try:
        async with app.state.sessionmaker() as session:
            principal = Principal(uuid.uuid4(), "partner", Role.partner, organisation)
            found = await inbox.inbox(session, principal)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", captured)
    assert found.open, "the data should hold open referrals"
    assert found.closed, "the data should hold closed referrals"
    failures = []
    wanted = iter(("ix_referrals_inbox_open", "ix_referrals_inbox_closed"))
    for statement, parameters in captured.statements:
        plan = await plans.explain(engine, statement, parameters)
        used = {n.get("Index Name") for n in plans.nodes(plan)}
        if seq := [b for b in plans.bad_nodes(plan) if b.startswith("Seq Scan")]:
            failures.append(f"inbox of {organisation}: {seq}\n{statement}")
        if (index := next(wanted)) not in used:
            failures.append(f"inbox of {organisation}: {index} not used ({used})\n{plan}")
    return failures


def test_the_inbox_indexes_hold_the_open_statuses() -> None:
    # The partial indexes' predicate (migration 0011, the model) is the inbox's list.
    assert "(" + ", ".join(f"'{v}'" for v in inbox.OPEN_VALUES) + ")" == OPEN_STATUSES_SQL


def test_a_sort_passes_only_for_a_few_rows() -> None:
    def plan(rows: int) -> dict:  # type: ignore[type-arg]
        heap = {"Node Type": "Bitmap Heap Scan", "Relation Name": "referrals", "Plan Rows": rows}
        return {"Node Type": "Sort", "Plans": [{**heap, "Plans": []}]}

    assert plans.bad_unless_few(plan(plans.FEW_ROWS)) == []
    assert plans.bad_unless_few(plan(plans.FEW_ROWS + 1)) == [
        "Sort on ?",
        "Bitmap Heap Scan on referrals",
    ]


def test_an_incremental_sort_of_ties_on_the_page_order_is_not_a_bad_node() -> None:
    tie = {"Node Type": "Incremental Sort", "Presorted Key": ["referrals.created_at"]}
    other = {"Node Type": "Incremental Sort", "Presorted Key": ["referrals.region"]}
    plan = {"Node Type": "Limit", "Plans": [{**tie, "Plans": [{**other, "Plans": []}]}]}
    assert plans.bad_nodes(plan) == ["Incremental Sort on ?"]


@pytest.mark.parametrize("bad", ["Seq Scan", "Sort"])
def test_the_check_sees_a_bad_node_deep_in_a_plan(bad: str) -> None:
    plan = {
        "Node Type": "Limit",
        "Plans": [{"Node Type": bad, "Relation Name": "referrals", "Plans": []}],
    }
    assert plans.bad_nodes(plan) == [f"{bad} on referrals"]
