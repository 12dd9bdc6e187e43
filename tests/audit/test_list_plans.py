"""GET /v1/audit/events reads every page through an index in seq order, on PostgreSQL.

Each filter alone and the documented combinations, first page and a later one: the
statements the endpoint sends (the time window's two probes included) are EXPLAINed on a
database of some thirty thousand events with true statistics, and no plan may scan
``audit_events`` sequentially, nor sort it (but for one case's few events). PostgreSQL
only: the production engine, whose planner the indexes of migration 0011 are for.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from app.main import create_app
from app.routers.audit import encode_cursor
from tests import plans
from tests.conftest import bearer

WINDOW = {"since": "{since}", "until": "{until}"}
CASES: dict[str, dict[str, str]] = {
    "no filter": {},
    "since": {"since": "{since}"},
    "until": {"until": "{until}"},
    "a time window": WINDOW,
    "action": {"action": "referral.created"},
    "action (rare)": {"action": "admin.client_created"},
    "actor": {"actor": "{actor}"},
    "referral_id": {"referral_id": "{referral_id}"},
    "partner_id": {"partner_id": "bench-medical"},
    "screening_id": {"screening_id": "{screening_id}"},
    "subject_id": {"subject_id": "{subject_id}"},
    "action in a time window": {"action": "referral.created", **WINDOW},
    "partner since": {"partner_id": "bench-medical", "since": "{since}"},
    "a referral's status changes": {
        "referral_id": "{referral_id}",
        "action": "referral.created",
    },
}

#: One case's events (a few dozen at most over its life): the planner may rightly read them
#: through the index by bitmap and sort them, which costs as little whatever the table's
#: size. Every other filter may not sort; none may scan the table.
ONE_CASE = {"referral_id", "screening_id", "subject_id", "a referral's status changes"}

_VALUES = """
SELECT min(occurred_at), max(occurred_at),
       (SELECT referral_id FROM audit_events WHERE action = 'referral.created'
        ORDER BY seq DESC LIMIT 1),
       (SELECT screening_id FROM audit_events WHERE screening_id IS NOT NULL
        ORDER BY seq DESC LIMIT 1),
       (SELECT subject_id FROM audit_events WHERE subject_id IS NOT NULL
        ORDER BY seq DESC LIMIT 1),
       (SELECT actor_id FROM audit_events WHERE actor_type = 'client'
        GROUP BY actor_id ORDER BY count(*) DESC LIMIT 1)
FROM audit_events
"""


async def test_every_filter_is_read_in_seq_order(postgres_url: str, tmp_path: Path) -> None:
    app = create_app(plans.settings_for(postgres_url, tmp_path))
    async with app.router.lifespan_context(app):
        auditor = await plans.fill(app, postgres_url, screenings=400, referrals=20_000)
        async with app.state.engine.connect() as conn:
            first, last, referral, screening, subject, actor = (
                await conn.exec_driver_sql(_VALUES)
            ).one()
        values = {
            "since": (first + (last - first) * 0.4).isoformat(),
            "until": (first + (last - first) * 0.6).isoformat(),
            "referral_id": str(referral),
            "screening_id": str(screening),
            "subject_id": str(subject),
            "actor": actor,
        }
        failures: list[str] = []
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ruta.test") as client:
            for name, template in CASES.items():
                params = {k: v.format(**values) for k, v in template.items()}
                head = await client.get(
                    "/v1/audit/events",
                    params={**params, "limit": "1"},
                    headers=bearer(auditor),
                )
                page_one = head.json()
                assert page_one["events"], f"{name}: the data should hold such events"
                # A later page: after the first event (the cursor the API would give).
                cursor = page_one["next_cursor"] or encode_cursor(page_one["events"][0]["seq"])
                for page, extra in (("first page", {}), ("later page", {"cursor": cursor})):
                    found = await plans.plans_of(
                        app,
                        client,
                        auditor,
                        "/v1/audit/events",
                        {**params, **extra},
                        ("audit_events",),
                    )
                    for statement, plan in found:
                        bad = plans.bad_nodes(plan)
                        if name in ONE_CASE:
                            bad = [b for b in bad if b.startswith("Seq Scan")]
                        if bad:
                            failures.append(f"{name}, {page}: {bad}\n{statement}\n{plan}")
                    listing = found[-1][1]
                    if page == "later page" and not plans.index_range_on(listing, "seq"):
                        failures.append(f"{name}, {page}: the cursor is not an index range")
    assert not failures, "\n\n".join(failures)
