"""The auditors' queries at scale: every filter of ``GET /v1/referrals`` and
``GET /v1/audit/events``, first page and a later page, p50/p99 against 100 ms.

    python -m bench.queries [--referrals 1000000] [--database-url postgresql://...]
                            [--seed-screenings 3000] [--processes 2] [--runs 40]

PostgreSQL only (the production engine). Without ``--database-url`` it creates a scratch
database (``BENCH_POSTGRES_URL`` or 127.0.0.1:5432) and drops it afterwards; a database
given is migrated and filled, and kept.

How the data is made (docs/performance.md, "Auditors' queries at a million referrals"):

1. **The real write path**: ``--seed-screenings`` varied screenings (25 regions, weighted;
   minors and adults; immediate danger or not; injuries, suicidal ideation, consent scopes,
   exploitation types) are posted in batches to ``POST /v1/screenings/batch`` of the real
   app, in-process, from ``--processes`` processes at once, against a directory with a
   national partner and regional partners per service. Every row (subjects, screenings,
   decisions, referrals, referral events, deliveries, audit events) is the service's own.
2. **Replication in SQL**, until ``--referrals`` is reached: ``INSERT … SELECT`` copies of
   the seed's subjects, screenings, decisions, referrals and audit events, each copy with
   fresh ids (an md5 of the seed id and the copy number, so references stay consistent),
   moved and spread in time so the whole set covers about two years (times inside a row
   keep their distance from the row's creation; the audit chain's times still never
   decrease along ``seq``), audit ``seq`` continued and hashes made unique. The replicated
   referrals' statuses are spread over the lifecycle (a copy's referral is completed,
   accepted, in progress, rejected…, by a hash of its id; ``closed_at`` set when closed),
   since the seed never runs the delivery worker. Referral events and deliveries are not
   replicated (no list query reads them), and the replicated audit events do not verify as
   a chain (their hashes are not recomputed).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import math
import multiprocessing
import os
import random
import statistics
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.audit.writer import CHAIN_LOCK_KEY as LOCK
from app.schemas.examples import EXAMPLE_SCREENING
from app.schemas.screening import Region
from bench import intake as wrk_bench
from bench.directory import SERVICES, write_directory

TARGET_MS = 100.0
#: Regions by weight: the mining and border regions see most cases; every region some.
_HEAVY = {"madre_de_dios": 12, "lima": 10, "cusco": 8, "puno": 8, "loreto": 6, "callao": 4}
REGIONS = [r.value for r in Region]
WEIGHTS = [_HEAVY.get(r, 1) for r in REGIONS]
#: Regional partners per service, besides the national one (so partner_id has variety).
PARTNER_REGIONS = ("madre_de_dios", "lima", "cusco", "puno")
#: Lifecycle statuses given to replicated referrals, by share (per cent).
STATUS_SHARES = (
    ("completed", 40),
    ("accepted", 10),
    ("in-progress", 10),
    ("delivered", 8),
    ("received", 6),
    ("on-hold", 4),
    ("failed", 6),
    ("cancelled", 6),
    ("queued", 4),
    ("revoked", 6),
)
CLOSED = ("completed", "failed", "cancelled", "revoked")
INJURIES = ("none", "none", "minor", "serious", "life_threatening")
EXPLOITATION = ("sexual", "sexual", "labour", "domestic_servitude", "forced_begging")


# --- 1. The real write path -------------------------------------------------------------


def screening(**overrides: Any) -> dict[str, Any]:
    """The README's example with a fresh id; ``overrides`` use ``__`` paths, ``...``
    removes a field (as tests/factories.py)."""
    body = copy.deepcopy(EXAMPLE_SCREENING)
    body["id"] = str(uuid.uuid4())
    for dotted, value in overrides.items():
        *parents, last = dotted.split("__")
        target = body
        for part in parents:
            target = target.setdefault(part, {})
        if value is ...:
            target.pop(last, None)
        else:
            target[last] = value
    return body


def varied_screening(rng: random.Random) -> dict[str, Any]:
    minor = rng.random() < 0.35
    scopes = [s for s in SERVICES if rng.random() < 0.75] or ["medical"]
    body = screening(
        subject__case_code=f"Q-{uuid.uuid4().hex[:12]}",
        subject__age=rng.randint(12, 17) if minor else rng.randint(18, 60),
        subject__unaccompanied_minor=minor and rng.random() < 0.5,
        subject__region=rng.choices(REGIONS, WEIGHTS)[0].replace("_", " "),
        subject__ubigeo=...,
        subject__sex=rng.choice(["female", "female", "male"]),
        consent__scopes=scopes,
        consent__share_identifying=rng.random() < 0.3,
        safety__immediate_danger=rng.random() < 0.08,
        safety__trafficker_nearby=rng.random() < 0.3,
        health__injury_severity=rng.choice(
            ["none", "none", "minor", "serious", "life_threatening"]
        ),
        health__hours_since_sexual_violence=rng.choice([None, None, None, 30, 100]),
        mental_health__suicidal=rng.choice(["none", "none", "ideation", "plan"]),
        indicators__exploitation_types=rng.sample(
            ["sexual", "labour", "domestic_servitude", "forced_begging"], 1
        ),
    )
    if body["health"]["hours_since_sexual_violence"] is None:
        del body["health"]["hours_since_sexual_violence"]
    return body


def _seed_process(env: dict[str, str], key: str, count: int, seed: int, batch: int) -> int:
    os.environ.update(env)
    return asyncio.run(_post_batches(key, count, seed, batch))


async def _post_batches(key: str, count: int, seed: int, batch: int) -> int:
    from app.main import create_app
    from app.settings import Settings

    app = create_app(Settings())
    rng = random.Random(seed)
    stored = 0
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for start in range(0, count, batch):
                bodies = [varied_screening(rng) for _ in range(min(batch, count - start))]
                response = await client.post(
                    "/v1/screenings/batch", json={"screenings": bodies}, headers=headers
                )
                if response.status_code != 200:
                    raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
                result = response.json()
                stored += result["created"]
                if result["failed"]:
                    failed = [r["problem"] for r in result["results"] if r.get("problem")]
                    raise RuntimeError(f"screenings refused: {failed[:2]}")
    return stored


#: The directory's role for each service's providers.
ROLES = {
    "medical": "health_facility",
    "psychological": "psychosocial",
    "legal": "legal_aid",
    "protection": "shelter",
}


def write_partners(path: Path) -> Path:
    """bench/directory.py's national partners (with their roles), a child-protection
    authority, and regional partners per service."""
    write_directory(path, "https://partners.bench.invalid")
    document = yaml.safe_load(path.read_text())
    for partner in document["partners"]:
        partner["role"] = ROLES[partner["services"][0]]
    authority = dict(
        document["partners"][-1], id="bench-authority", role=("child_protection_authority")
    )
    authority["organisation"] = {"id": "bench-authority", "name": "Bench authority"}
    authority["endpoint"] = {"url": "https://partners.bench.invalid/bench-authority"}
    document["partners"].append(authority)
    for service in SERVICES:
        for region in PARTNER_REGIONS:
            partner_id = f"bench-{service}-{region.replace('_', '-')}"
            document["partners"].append(
                {
                    "id": partner_id,
                    "organisation": {"id": partner_id, "name": f"Bench {service} {region}"},
                    "name": f"Bench {service} partner in {region} (fictional)",
                    "role": ROLES[service],
                    "services": [service],
                    "service_area": {"regions": [region.replace("_", " ")]},
                    "languages": ["es", "qu", "ay", "en"],
                    "capacity": {"available": 100_000, "maximum": 100_000},
                    "hours": {"always_open": True},
                    "endpoint": {"url": f"https://partners.bench.invalid/{partner_id}"},
                    "priority": 20,
                }
            )
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def seed(env: dict[str, str], key: str, screenings: int, processes: int) -> tuple[int, float]:
    """Post the seed screenings from ``processes`` processes; (stored, seconds)."""
    share = math.ceil(screenings / processes)
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        stored = pool.starmap(
            _seed_process, [(env, key, share, 1000 + i, 25) for i in range(processes)]
        )
    return sum(stored), time.perf_counter() - started


def cli_key(env: dict[str, str], role: str, organisation: str | None = None) -> str:
    command = [wrk_bench.RUTA, "clients", "create", "--name", f"bench {role}", "--role", role]
    if organisation:
        command += ["--organisation", organisation]
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1]


# --- 2. Replication in SQL --------------------------------------------------------------


def _new_id(column: str) -> str:
    return f"md5({column}::text || ':' || :ks)::uuid"


#: Where copy ``k``'s stretch of time starts.
_START = "(CAST(:origin AS timestamptz) + (CAST(:k AS integer) - 1) * CAST(:span AS interval))"


def _moved(column: str, anchor: str) -> str:
    """A time of copy ``k``: the row's anchor mapped onto the copy's stretch of time, the
    row's other times kept at their distance from it."""
    stretched = f"({anchor} - CAST(:t0 AS timestamptz)) * CAST(:stretch AS float8)"
    return f"({column} + ({_START} + {stretched} - {anchor}))"


_COPIES = {
    "subjects": """
        INSERT INTO subjects (id, organisation, case_code, wrapped_dek, kek_id, created_at,
                              erased_at)
        SELECT {id}, organisation, left(case_code, 56) || '~' || :ks, wrapped_dek, kek_id,
               {created}, {erased}
        FROM subjects WHERE created_at >= :t0 AND created_at <= :t1
    """,
    "screenings": """
        INSERT INTO screenings (id, organisation, client_id, subject_id, schema_version,
            screened_at, received_at, fingerprint, data, personal_ct, personal_fields,
            consent_withdrawn_at)
        SELECT {id}, organisation, client_id, {subject}, schema_version, {screened},
               {received}, fingerprint, data, personal_ct, personal_fields, {withdrawn}
        FROM screenings WHERE received_at >= :t0 AND received_at <= :t1
    """,
    "decisions": """
        INSERT INTO decisions (id, screening_id, rule_set_version, rule_set_hash,
            non_identifying_notification, notification_partner_id, trace, created_at)
        SELECT {id}, {screening}, rule_set_version, rule_set_hash,
               non_identifying_notification, notification_partner_id, trace, {created}
        FROM decisions WHERE created_at >= :t0 AND created_at <= :t1
    """,
    "referrals": """
        INSERT INTO referrals (id, screening_id, decision_id, subject_id, organisation, region,
            service, recipient, urgency, legal_basis, identifying, flags, reasons, status,
            partner_id, match, tried_partner_ids, deadline_at, data_categories, needs_human,
            human_reason, assignment, created_at, updated_at, closed_at)
        SELECT {id}, {screening}, {decision}, {subject}, organisation, region, service,
               recipient, urgency, legal_basis, identifying, flags, reasons, s.status,
               partner_id, match, tried_partner_ids, {deadline}, data_categories, needs_human,
               human_reason, assignment, {created}, {updated},
               CASE WHEN s.status IN ({closed}) THEN {updated} END
        FROM referrals r
        CROSS JOIN LATERAL (SELECT CASE
            WHEN r.partner_id IS NULL THEN r.status
            {status_cases} END AS status) s
        WHERE created_at >= :t0 AND created_at <= :t1
    """,
    "audit_events": """
        INSERT INTO audit_events (seq, prev_hash, hash, occurred_at, action, actor_type,
            actor_id, actor_role, screening_id, referral_id, partner_id, subject_id,
            request_id, data)
        SELECT seq + CAST(:head AS bigint),
               sha256(prev_hash || convert_to(:ks, 'UTF8')),
               sha256(hash || convert_to(:ks, 'UTF8')), {occurred}, action,
               actor_type, actor_id, actor_role, {screening}, {referral}, partner_id,
               {subject}, request_id, data
        FROM audit_events WHERE seq <= CAST(:seqs AS bigint)
    """,
}


def _status_cases() -> str:
    cases, bound = [], 0
    for status, share in STATUS_SHARES:
        bound += share
        cases.append(
            f"WHEN ('x' || substr(md5(r.id::text || :ks), 1, 6))::bit(24)::int % 100 "
            f"< {bound} THEN '{status}'"
        )
    return "\n            ".join(cases)


def copy_statements() -> dict[str, str]:
    closed = ", ".join(f"'{s}'" for s in CLOSED)
    return {
        table: sql.format(
            id=_new_id("id"),
            subject=_new_id("subject_id"),
            screening=_new_id("screening_id"),
            decision=_new_id("decision_id"),
            referral=_new_id("referral_id"),
            created=_moved("created_at", "created_at"),
            erased=_moved("erased_at", "created_at"),
            screened=_moved("screened_at", "received_at"),
            received=_moved("received_at", "received_at"),
            withdrawn=_moved("consent_withdrawn_at", "received_at"),
            deadline=_moved("deadline_at", "created_at"),
            updated=_moved("updated_at", "created_at"),
            # The events before the seed (the clients' creation) open each copy.
            occurred=f"greatest({_moved('occurred_at', 'occurred_at')}, {_START})",
            closed=closed,
            status_cases=_status_cases(),
        )
        for table, sql in _COPIES.items()
    }


async def replicate(conn: AsyncConnection, copies: int, t0: datetime, t1: datetime) -> float:
    """``copies`` copies of the seed (times ``t0``..``t1``, the first ``seqs`` events), each
    later in time than the one before and all after the seed, each copy's events appended
    after the chain's head; returns seconds taken."""
    from datetime import timedelta

    started = time.perf_counter()
    seqs = (await conn.execute(text("SELECT max(seq) FROM audit_events"))).scalar_one()
    seed_span = max((t1 - t0).total_seconds(), 1.0)
    span = timedelta(days=730) / max(copies, 1)
    statements = copy_statements()
    for k in range(1, copies + 1):
        params = {
            "k": k,
            "ks": str(k),
            "t0": t0,
            "t1": t1,
            "seqs": seqs,
            "origin": t1 + timedelta(seconds=1),
            "span": span,
            "stretch": span.total_seconds() / seed_span,
        }
        # Under the chain's lock, after its head: the running app may append events too.
        params["head"] = (
            await conn.execute(text("SELECT seq FROM ruta_audit_lock_head(:key)"), {"key": LOCK})
        ).scalar_one()
        for sql in statements.values():
            await conn.execute(text(sql), params)
        await conn.commit()
        if k % 10 == 0 or k == copies:
            print(f"  copy {k}/{copies} ({time.perf_counter() - started:.0f} s)", flush=True)
    return time.perf_counter() - started


# --- 3. The queries ---------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    params: dict[str, str]
    #: The table and the SQL conditions of the filter, to find a later page's cursor.
    table: str
    where: tuple[str, ...]


def _referral_cursor(created_at: datetime, ident: uuid.UUID) -> str:
    raw = f"{created_at.isoformat()}|{ident}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


_CONDITIONS = {
    "created_from": "created_at >= CAST(CAST(:created_from AS text) AS timestamptz)",
    "created_to": "created_at < CAST(CAST(:created_to AS text) AS timestamptz)",
    "since": "occurred_at >= CAST(CAST(:since AS text) AS timestamptz)",
    "until": "occurred_at < CAST(CAST(:until AS text) AS timestamptz)",
    "actor": "actor_id = :actor",
    "referral_id": "referral_id = CAST(CAST(:referral_id AS text) AS uuid)",
    "screening_id": "screening_id = CAST(CAST(:screening_id AS text) AS uuid)",
    "subject_id": "subject_id = CAST(CAST(:subject_id AS text) AS uuid)",
}


def _case(name: str, path: str, table: str, params: dict[str, str]) -> Case:
    where = tuple(_CONDITIONS.get(key, f"{key} = :{key}") for key in params)
    return Case(name, path, params, table, where)


def referral_case(name: str, **params: str) -> Case:
    return _case(name, "/v1/referrals", "referrals", params)


def audit_case(name: str, **params: str) -> Case:
    return _case(name, "/v1/audit/events", "audit_events", params)


async def _one(conn: AsyncConnection, sql: str) -> Any:
    return (await conn.execute(text(sql))).scalar_one()


async def cases(conn: AsyncConnection) -> list[Case]:
    """Every filter alone and the documented combinations, with values from the data."""
    return await referral_cases(conn) + await audit_cases(conn)


async def referral_cases(conn: AsyncConnection) -> list[Case]:
    low = await _one(conn, "SELECT min(created_at) FROM referrals")
    high = await _one(conn, "SELECT max(created_at) FROM referrals")
    week_to = low + (high - low) * 0.6  # the data spans two years: a week is 1/104
    week_from = (week_to - (high - low) / 104).isoformat()
    week_to_s = week_to.isoformat()
    return [
        referral_case("referrals: no filter"),
        referral_case("referrals: status=completed", status="completed"),
        referral_case("referrals: status=on-hold", status="on-hold"),
        referral_case("referrals: service=legal", service="legal"),
        referral_case("referrals: urgency=emergency", urgency="emergency"),
        referral_case("referrals: partner_id (national)", partner_id="bench-medical"),
        referral_case(
            "referrals: partner_id (regional)", partner_id="bench-protection-madre-de-dios"
        ),
        referral_case("referrals: region=lima", region="lima"),
        referral_case("referrals: region=tumbes", region="tumbes"),
        referral_case(
            "referrals: urgency=emergency&region=madre_de_dios",
            urgency="emergency",
            region="madre_de_dios",
        ),
        referral_case(
            "referrals: urgency=emergency&region=tumbes", urgency="emergency", region="tumbes"
        ),
        referral_case("referrals: created_from", created_from=week_from),
        referral_case("referrals: created_to", created_to=week_to_s),
        referral_case(
            "referrals: created_from&created_to (a week)",
            created_from=week_from,
            created_to=week_to_s,
        ),
        referral_case(
            "referrals: service=medical&week",
            service="medical",
            created_from=week_from,
            created_to=week_to_s,
        ),
        referral_case(
            "referrals: region=cusco&week",
            region="cusco",
            created_from=week_from,
            created_to=week_to_s,
        ),
    ]


async def audit_cases(conn: AsyncConnection) -> list[Case]:
    first = await _one(conn, "SELECT min(occurred_at) FROM audit_events")
    last = await _one(conn, "SELECT max(occurred_at) FROM audit_events")
    since = (first + (last - first) * 0.5).isoformat()
    until = (first + (last - first) * 0.52).isoformat()
    referral = await _one(
        conn,
        "SELECT referral_id FROM audit_events WHERE referral_id IS NOT NULL "
        "ORDER BY seq DESC LIMIT 1",
    )
    screening_id = await _one(
        conn,
        "SELECT screening_id FROM audit_events WHERE screening_id IS NOT NULL "
        "ORDER BY seq DESC LIMIT 1",
    )
    subject = await _one(
        conn,
        "SELECT subject_id FROM audit_events WHERE subject_id IS NOT NULL "
        "ORDER BY seq DESC LIMIT 1",
    )
    actor = await _one(
        conn,
        "SELECT actor_id FROM audit_events WHERE actor_type = 'client' "
        "GROUP BY actor_id ORDER BY count(*) DESC LIMIT 1",
    )
    return [
        audit_case("audit: no filter"),
        audit_case("audit: since", since=since),
        audit_case("audit: until", until=until),
        audit_case("audit: since&until", since=since, until=until),
        audit_case("audit: action=referral.created", action="referral.created"),
        audit_case("audit: action=admin.client_created (rare)", action="admin.client_created"),
        audit_case("audit: actor (a clinic's client)", actor=str(actor)),
        audit_case("audit: actor=cli (a component, rare)", actor="cli"),
        audit_case("audit: partner_id", partner_id="bench-medical"),
        audit_case("audit: referral_id", referral_id=str(referral)),
        audit_case("audit: screening_id", screening_id=str(screening_id)),
        audit_case("audit: subject_id", subject_id=str(subject)),
        audit_case(
            "audit: action&since&until", action="referral.created", since=since, until=until
        ),
        audit_case("audit: partner_id&since", partner_id="bench-medical", since=since),
    ]


@dataclass
class Timing:
    name: str
    page: str
    p50: float
    p99: float
    rows: int
    #: The database's share: the request's SQL statements, from send to result.
    db_p50: float = 0.0

    @property
    def passed(self) -> bool:
        return self.p99 < TARGET_MS


async def later_cursor(conn: AsyncConnection, case: Case) -> str | None:
    """The cursor of a page halfway through the filter's rows (found with OFFSET here,
    outside the timing; the route itself never uses OFFSET)."""
    where = " AND ".join(case.where) or "TRUE"
    referrals = case.table == "referrals"
    columns, order = ("created_at, id", "created_at DESC, id DESC") if referrals else ("seq", "seq")
    count = f"SELECT count(*) FROM {case.table} WHERE {where}"  # noqa: S608 (constants)
    total = (await conn.execute(text(count), case.params)).scalar_one()
    middle = f"SELECT {columns} FROM {case.table} WHERE {where} ORDER BY {order} "  # noqa: S608
    middle += "OFFSET :half LIMIT 1"
    row = (await conn.execute(text(middle), {**case.params, "half": total // 2})).first()
    if row is None or total < 2:
        return None
    if referrals:
        return _referral_cursor(row[0], row[1])
    return base64.urlsafe_b64encode(f"audit:{row[0]}".encode()).decode().rstrip("=")


class StatementClock:
    """The time a request's SQL statements take (SQLAlchemy cursor events)."""

    def __init__(self, engine: Any) -> None:
        self.total = 0.0
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, *args: Any) -> None:
        args[4].info_bench_started = time.perf_counter()  # the execution context

    def _after(self, *args: Any) -> None:
        self.total += time.perf_counter() - args[4].info_bench_started


async def time_case(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    case: Case,
    cursor: str | None,
    runs: int,
    clock: StatementClock,
) -> tuple[list[float], list[float], int]:
    params = dict(case.params)
    if cursor is not None:
        params["cursor"] = cursor
    samples: list[float] = []
    database: list[float] = []
    rows = 0
    for _ in range(runs + 2):  # two warm-up calls
        clock.total = 0.0
        started = time.perf_counter()
        response = await client.get(case.path, params=params, headers=headers)
        samples.append((time.perf_counter() - started) * 1000)
        database.append(clock.total * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"{case.name}: {response.status_code} {response.text[:300]}")
        body = response.json()
        rows = len(body.get("items", body.get("events", [])))
    return samples[2:], database[2:], rows


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


async def measure(env: dict[str, str], url: str, key: str, runs: int) -> list[Timing]:
    os.environ.update(env)
    from app.background import BackgroundTasks
    from app.db import create_engine
    from app.main import create_app
    from app.settings import Settings, normalise_database_url

    engine = create_engine(normalise_database_url(url))
    async with engine.connect() as conn:
        found = await cases(conn)
        cursors = [await later_cursor(conn, case) for case in found]
    await engine.dispose()
    # The background audit jobs stay off while timing: the replicated events do not verify
    # as a chain, and the verifier would re-check them every 15 seconds.
    BackgroundTasks.start = lambda self: None  # type: ignore[method-assign]
    app = create_app(Settings())
    timings: list[Timing] = []
    async with app.router.lifespan_context(app):
        clock = StatementClock(app.state.engine.sync_engine)
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for case, cursor in zip(found, cursors, strict=True):
                for page, at in (("first", None), ("later", cursor)):
                    if page == "later" and at is None:
                        continue
                    samples, database, rows = await time_case(
                        client, headers, case, at, runs, clock
                    )
                    timing = Timing(
                        case.name,
                        page,
                        statistics.median(samples),
                        percentile(samples, 0.99),
                        rows,
                        statistics.median(database),
                    )
                    timings.append(timing)
                    print(_line(timing), flush=True)
        for organisation in ("bench-medical", "bench-protection-madre-de-dios"):
            timing = await time_inbox(app, organisation, runs, clock)
            timings.append(timing)
            print(_line(timing), flush=True)
    return timings


async def time_inbox(app: Any, organisation: str, runs: int, clock: StatementClock) -> Timing:
    """A partner's inbox as the console reads it (the service function its page calls):
    only the organisation's own referrals, open ones by urgency and the last closed."""
    from app.auth import Principal
    from app.models import Role
    from app.referrals.inbox import inbox

    principal = Principal(uuid.uuid4(), "bench partner", Role.partner, organisation)
    samples: list[float] = []
    database: list[float] = []
    shown = 0
    for _ in range(runs + 2):
        clock.total = 0.0
        started = time.perf_counter()
        async with app.state.sessionmaker() as session:
            found = await inbox(session, principal)
        samples.append((time.perf_counter() - started) * 1000)
        database.append(clock.total * 1000)
        shown = len(found.open) + len(found.closed)
    samples, database = samples[2:], database[2:]
    return Timing(
        f"partner inbox ({organisation})",
        "page",
        statistics.median(samples),
        percentile(samples, 0.99),
        shown,
        statistics.median(database),
    )


def _line(t: Timing) -> str:
    verdict = "PASS" if t.passed else "FAIL"
    return (
        f"  {t.name:<50} {t.page:<5} {t.rows:>3} rows  p50 {t.p50:6.1f} ms  "
        f"p99 {t.p99:6.1f} ms  (SQL p50 {t.db_p50:5.1f} ms)  {verdict}"
    )


# --- Running it -------------------------------------------------------------------------


async def counts(url: str) -> tuple[int, int, datetime, datetime]:
    from app.db import create_engine
    from app.settings import normalise_database_url

    engine = create_engine(normalise_database_url(url))
    async with engine.connect() as conn:
        referrals = (await conn.execute(text("SELECT count(*) FROM referrals"))).scalar_one()
        events = (await conn.execute(text("SELECT count(*) FROM audit_events"))).scalar_one()
        t0 = (
            await conn.execute(
                text(
                    "SELECT least((SELECT min(received_at) FROM screenings), "
                    "(SELECT min(created_at) FROM subjects))"
                )
            )
        ).scalar_one()
        t1 = (
            await conn.execute(
                text(
                    "SELECT greatest((SELECT max(occurred_at) FROM audit_events), "
                    "(SELECT max(created_at) FROM referrals), "
                    "(SELECT max(received_at) FROM screenings))"
                )
            )
        ).scalar_one()
    await engine.dispose()
    return referrals, events, t0, t1


async def fill(url: str, copies: int, t0: datetime, t1: datetime) -> float:
    from app.db import create_engine
    from app.settings import normalise_database_url

    engine = create_engine(normalise_database_url(url))
    async with engine.connect() as conn:
        seconds = await replicate(conn, copies, t0, t1)
        await conn.execute(text("COMMIT"))
        for table in ("subjects", "screenings", "decisions", "referrals", "audit_events"):
            await conn.execute(text(f"VACUUM ANALYZE {table}"))
    await engine.dispose()
    return seconds


def run(args: argparse.Namespace, url: str, scratch: Path) -> int:
    directory = write_partners(scratch / "directory.yaml")
    env = wrk_bench.ruta_env(url, 8000, 1, directory)
    # The bulk-loaded events are not signed yet: no tree checkpoint catch-up over them in
    # the background while the queries are timed (the longest interval allowed).
    env["RUTA_AUDIT_CHECKPOINT_SECONDS"] = "3600"
    clinic = wrk_bench.create_key(env)  # migrates, then makes a clinic's client
    auditor = cli_key(env, "auditor")
    real, events, t0, t1 = asyncio.run(counts(url))
    copies = 0
    if real and args.reuse:
        print(f"reusing the data already there ({real} referrals)", flush=True)
    else:
        stored, seconds = seed(env, clinic, args.seed_screenings, args.processes)
        real, events, t0, t1 = asyncio.run(counts(url))
        print(
            f"real write path: {stored} screenings -> {real} referrals, {events} audit "
            f"events in {seconds:.0f} s ({args.processes} processes, batches of 25 via "
            "POST /v1/screenings/batch)",
            flush=True,
        )
        copies = max(0, math.ceil(args.referrals / max(real, 1)) - 1)
    if copies:
        print(f"replicating the seed {copies} times in SQL (INSERT ... SELECT)", flush=True)
        seconds = asyncio.run(fill(url, copies, t0, t1))
        print(f"  done in {seconds:.0f} s", flush=True)
    total, events, _, _ = asyncio.run(counts(url))
    print(f"data: {total} referrals, {events} audit events", flush=True)
    print(
        f"queries: {args.runs} runs each, in-process HTTP (GET via the real routes, limit "
        f"100), load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs:"
    )
    timings = asyncio.run(measure(env, url, auditor, args.runs))
    failed = [t for t in timings if not t.passed]
    print(
        f"{len(timings) - len(failed)}/{len(timings)} under {TARGET_MS:.0f} ms at p99 "
        f"(load average {os.getloadavg()[0]:.1f} at the end)"
    )
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--referrals", type=int, default=20_000)
    parser.add_argument("--database-url", default=None, help="postgresql://... (kept)")
    parser.add_argument("--seed-screenings", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="with --database-url: measure the data already there (migrated first)",
    )
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="ruta-queries-"))
    admin: str | None = None
    url = args.database_url
    if url is None:
        made = wrk_bench.postgres_database()
        if made is None:
            print("PostgreSQL unavailable (BENCH_POSTGRES_URL or 127.0.0.1:5432)")
            return 2
        admin, url = made
    elif not url.startswith("postgresql"):
        print("PostgreSQL only: the production engine is what this measures")
        return 2
    try:
        return run(args, url, scratch)
    finally:
        if admin is not None:
            wrk_bench.drop_database(admin, url)


if __name__ == "__main__":
    raise SystemExit(main())
