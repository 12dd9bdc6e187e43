"""The audit trail at scale: online verification, export, offline verification, proofs.

    python -m bench.audit [--events 250000] [--engine sqlite|postgresql] [--keep-files]

Generates the log through the real write path (``app.audit.record`` in transactions of
about one screening's events, the writer's commit hook: chain lock, multi-row INSERT,
checkpoints every 1,000 events with the tree extended), then measures, against the targets
of issue 18:

* ``GET /v1/audit/verify`` in the real app (in-process client): the first one on a log
  never verified (cut short at its time budget), and one after the background full walk
  and 1,000 more events, as in steady operation (target < 1 s);
* the background full walk (events per second);
* an export of the whole log, NDJSON, through the service's code (target >= 50,000/s);
* ``ruta audit verify`` of that file offline (target >= 100,000/s);
* an inclusion proof (one referral's events) and a consistency proof (from the first
  checkpoint to the latest) checked offline (target < 50 ms each).

PostgreSQL from BENCH_POSTGRES_URL or a local server at 127.0.0.1:5432. The 1,000,000-event
run is long (generation dominates): ``python -m bench.audit --events 1000000``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import audit
from app.audit import Action, proofs, verification
from app.audit.chain import public_key_b64
from app.audit.export import chunks, prepare_export
from app.audit.reader import verify_export_file
from app.audit.writer import Actor
from app.db import create_engine, create_sessionmaker
from app.main import create_app
from app.migrations import upgrade
from app.settings import Environment, Settings, normalise_database_url
from bench.intake import drop_database, postgres_database
from tests.conftest import key_factory

SECRET = "bench-secret-key-0123456789abcdef-0123456789"  # noqa: S105 (test env)
CLINIC = Actor(type="client", id=str(uuid.UUID(int=1)), role="clinic")
WORKER = Actor(type="system", id="delivery-worker", role=None)


def screening_events(n: int) -> list[dict[str, Any]]:
    """About what one screening's intake and delivery record: five events."""
    screening, subject = uuid.UUID(int=n), uuid.UUID(int=10**9 + n)
    referral = uuid.UUID(int=2 * 10**9 + n)
    return [
        {
            "action": Action.screening_received,
            "actor": CLINIC,
            "screening_id": screening,
            "subject_id": subject,
            "request_id": f"req-{n}",
            "data": {"schema_version": "1", "personal_fields": ["notes", "subject.name"]},
        },
        {
            "action": Action.decision_made,
            "actor": CLINIC,
            "screening_id": screening,
            "data": {"rule_set_hash": "ab" * 32, "rules_fired": ["minor", "mining_exposure"]},
        },
        {
            "action": Action.referral_created,
            "actor": CLINIC,
            "screening_id": screening,
            "referral_id": referral,
            "partner_id": "hospital-santa-rosa",
            "data": {"service": "medical", "urgency": "urgent", "legal_basis": "consent"},
        },
        {
            "action": Action.referral_forwarded,
            "actor": WORKER,
            "screening_id": screening,
            "referral_id": referral,
            "partner_id": "hospital-santa-rosa",
            "data": {"fields_shared": ["age", "region"], "legal_basis": "consent", "attempt": 1},
        },
        {
            "action": Action.referral_attempted,
            "actor": WORKER,
            "referral_id": referral,
            "partner_id": "hospital-santa-rosa",
            "data": {"attempt": 1, "http_status": 200, "outcome": "delivered"},
        },
    ]


async def generate(maker: async_sessionmaker[AsyncSession], events: int) -> float:
    """Write ``events`` events, eight screenings' worth per transaction (a group commit)."""
    started = time.perf_counter()
    n = 0
    while n * 5 < events:
        async with maker() as session:
            for _ in range(8):
                n += 1
                for spec in screening_events(n):
                    await audit.record(session, **spec)
            await session.commit()
    return time.perf_counter() - started


def timed(label: str, seconds: float, extra: str = "") -> None:
    print(f"  {label:<46} {seconds * 1000:9.1f} ms {extra}", flush=True)


async def run(url: str, events: int, workdir: Path) -> dict[str, Any]:
    settings = Settings(
        env=Environment.test,
        database_url=url,
        secret_key=SECRET,  # type: ignore[arg-type]
        embedded_worker=False,
        rate_limit_backend="off",
    )
    results: dict[str, Any] = {"events": events}
    engine = create_engine(url)
    maker = create_sessionmaker(engine)
    audit.configure_sessionmaker(maker, settings)
    seconds = await generate(maker, events)
    results["write_events_per_s"] = events / seconds
    print(f"  generated {events} events in {seconds:.1f} s ({events / seconds:,.0f}/s)")
    await online(maker, settings, results)
    path = workdir / "audit.ndjson"
    await export(maker, settings, path, results)
    signer = audit.AuditConfig.from_settings(settings).signer
    await offline(path, signer.public_key, results)
    await check_proofs(maker, settings, signer.public_key, results)
    await engine.dispose()
    return results


async def online(
    maker: async_sessionmaker[AsyncSession], settings: Settings, results: dict[str, Any]
) -> None:
    """GET /v1/audit/verify in the real app: never verified, then after the walk."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        key = await key_factory(app, settings)("auditor", name="bench")
        headers = {"Authorization": f"Bearer {key}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            started = time.perf_counter()
            first = (await client.get("/v1/audit/verify", headers=headers)).json()
            results["verify_first_s"] = time.perf_counter() - started
            timed(
                "GET /v1/audit/verify, never verified",
                results["verify_first_s"],
                f"(verified to {first['verified_through']}, complete={first['complete']})",
            )
            started = time.perf_counter()
            walked = await verification.walk_if_due(maker, settings, "bench")
            walk_s = time.perf_counter() - started
            assert walked is not None
            assert walked.ok, walked
            results["walk_events_per_s"] = walked.events_checked / walk_s
            timed("background full walk", walk_s, f"({results['walk_events_per_s']:,.0f}/s)")
            await generate(maker, 1000)
            samples = []
            for _ in range(5):
                started = time.perf_counter()
                answer = (await client.get("/v1/audit/verify", headers=headers)).json()
                samples.append(time.perf_counter() - started)
                assert answer["ok"], answer
                assert answer["complete"], answer
            results["verify_steady_s"] = max(samples)
            timed("GET /v1/audit/verify, after 1,000 new events", samples[0])
            timed("GET /v1/audit/verify, the worst of 5", max(samples))


async def export(
    maker: async_sessionmaker[AsyncSession],
    settings: Settings,
    path: Path,
    results: dict[str, Any],
) -> None:
    """The whole log as NDJSON, through the service's export code."""
    async with maker() as session:
        plan = await prepare_export(session, settings, actor=CLINIC, fmt="ndjson")
        await session.commit()
        started, cpu = time.perf_counter(), time.process_time()
        with path.open("wb") as handle:
            async for chunk in chunks(session, plan, "ndjson"):
                handle.write(chunk)
        export_s = time.perf_counter() - started
        export_cpu = time.process_time() - cpu
    exported = plan.to_seq - plan.from_seq + 1
    assert plan.final is not None, plan.failure
    results["export_events_per_s"] = exported / export_s
    results["export_events_per_cpu_s"] = exported / export_cpu
    timed(
        "export, NDJSON",
        export_s,
        f"({results['export_events_per_s']:,.0f} events/s;"
        f" {results['export_events_per_cpu_s']:,.0f} per CPU second of this process)",
    )


async def offline(path: Path, key: Ed25519PublicKey, results: dict[str, Any]) -> None:
    """The export verified offline, in this process and with the command."""
    started, cpu = time.perf_counter(), time.process_time()
    report = verify_export_file(path, "ndjson", key)
    offline_s = time.perf_counter() - started
    offline_cpu = time.process_time() - cpu
    assert report.ok, report
    results["offline_events_per_s"] = report.events_checked / offline_s
    results["offline_events_per_cpu_s"] = report.events_checked / offline_cpu
    timed(
        "offline verification",
        offline_s,
        f"({results['offline_events_per_s']:,.0f}/s;"
        f" {results['offline_events_per_cpu_s']:,.0f} per CPU second)",
    )
    started = time.perf_counter()
    cli = await asyncio.to_thread(
        subprocess.run,
        [".venv/bin/ruta", "audit", "verify", str(path), "--public-key", public_key_b64(key)],
        capture_output=True,
        text=True,
    )
    cli_s = time.perf_counter() - started
    assert cli.returncode == 0, cli.stderr
    results["cli_events_per_s"] = report.events_checked / cli_s
    timed("ruta audit verify (the command)", cli_s, f"({results['cli_events_per_s']:,.0f}/s)")


async def check_proofs(
    maker: async_sessionmaker[AsyncSession],
    settings: Settings,
    key: Ed25519PublicKey,
    results: dict[str, Any],
) -> None:
    """One referral's inclusion proof, and consistency from the first checkpoint."""
    async with maker() as session:
        inclusion = await proofs.inclusion_bundle(
            session, settings, referral_id=uuid.UUID(int=2 * 10**9 + 3)
        )
        consistency = await proofs.consistency_bundle(session, settings, from_size=1000)
        await session.commit()
    for name, bundle in (("inclusion", inclusion), ("consistency", consistency)):
        raw = orjson.dumps(bundle)
        started = time.perf_counter()
        checked = proofs.verify_bundle(orjson.loads(raw), key)
        elapsed = time.perf_counter() - started
        assert checked.ok, checked
        results[f"{name}_check_ms"] = elapsed * 1000
        size = len(bundle.get("entries", [])) or len(bundle.get("proof", []))
        timed(f"{name} proof checked offline", elapsed, f"({size} entries/hashes)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=250_000)
    parser.add_argument("--engine", choices=["sqlite", "postgresql"], action="append")
    args = parser.parse_args(argv)
    engines = args.engine or ["sqlite", "postgresql"]
    status = 0
    for engine in engines:
        with tempfile.TemporaryDirectory(prefix="ruta-bench-audit-") as tmp:
            workdir = Path(tmp)
            made = None
            if engine == "sqlite":
                url = f"sqlite+aiosqlite:///{workdir / 'audit.db'}"
            else:
                made = postgres_database()
                if made is None:
                    print("PostgreSQL not reachable: skipped")
                    continue
                url = normalise_database_url(made[1])
            print(f"== audit trail, {engine}, {args.events:,} events ==", flush=True)
            upgrade(url)
            try:
                results = asyncio.run(run(url, args.events, workdir))
            finally:
                if made is not None:
                    drop_database(*made)
            print(json.dumps({"engine": engine, **results}, default=round))
            verdicts = {
                "online verify < 1 s": results["verify_steady_s"] < 1.0
                and results["verify_first_s"] < 1.0,
                "export >= 50,000 events/s": results["export_events_per_s"] >= 50_000,
                "offline verify >= 100,000 events/s": results["offline_events_per_s"] >= 100_000,
                "proofs < 50 ms": max(
                    results["inclusion_check_ms"], results["consistency_check_ms"]
                )
                < 50,
            }
            for what, met in verdicts.items():
                print(f"  {'met' if met else 'NOT MET':<8} {what}")
                status |= 0 if met else 1
    return status


if __name__ == "__main__":
    os.environ.setdefault("RUTA_ENV", "test")
    raise SystemExit(main())
