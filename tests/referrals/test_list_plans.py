"""GET /v1/referrals reads every page through an index in page order, on PostgreSQL.

Each filter alone and the documented combinations, first page and a later one: the
statements the endpoint sends are EXPLAINed on a database of some twenty thousand referrals
with true statistics, and no plan may scan ``referrals`` sequentially or sort it (which
would read every matching row before returning a hundred). PostgreSQL only: the production
engine, whose planner the indexes of migration 0011 are for.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from app.main import create_app
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
                        if bad := plans.bad_nodes(plan):
                            failures.append(f"{name}, {page}: {bad}\n{statement}\n{plan}")
                        if page == "later page" and not plans.index_range_on(plan, "created_at"):
                            failures.append(f"{name}, {page}: the cursor is not an index range")
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("bad", ["Seq Scan", "Sort"])
def test_the_check_sees_a_bad_node_deep_in_a_plan(bad: str) -> None:
    plan = {
        "Node Type": "Limit",
        "Plans": [{"Node Type": bad, "Relation Name": "referrals", "Plans": []}],
    }
    assert plans.bad_nodes(plan) == [f"{bad} on referrals"]
