"""Crypto-shredding: after erasure the personal fields are unreadable everywhere, the
non-personal record stays, and the audit chain still verifies."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.store import verify_database
from app.models import Subject
from app.models.audit import AuditEvent
from app.settings import Settings
from tests.conftest import KeyFactory, bearer
from tests.factories import screening

ORG = "Caravana de la Vida"
CANARY_NAME = "CANARY-ERASE-NAME-4417"
CANARY_NOTE = "CANARY-ERASE-NOTE-4417"


def _database_bytes(database_url: str) -> bytes:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        path = Path(str(url.database))
        blobs = [path.read_bytes()]
        for suffix in ("-wal", "-shm"):
            extra = Path(str(path) + suffix)
            if extra.exists():
                blobs.append(extra.read_bytes())
        return b"".join(blobs)
    env = {**os.environ, "PGPASSWORD": url.password or ""}
    dump = subprocess.run(
        [
            "pg_dump",
            "--host",
            url.host or "127.0.0.1",
            "--port",
            str(url.port or 5432),
            "--username",
            url.username or "postgres",
            "--data-only",
            str(url.database),
        ],
        check=True,
        capture_output=True,
        env=env,
    )
    return dump.stdout


async def test_erasure_makes_personal_fields_unreadable_and_chain_still_verifies(
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    app: FastAPI,
) -> None:
    clinic = await api_key("clinic", ORG)
    admin = await api_key("admin")
    body = screening(subject__name=CANARY_NAME, notes=CANARY_NOTE)
    assert (await http.post("/v1/screenings", json=body, headers=bearer(clinic))).status_code == 201
    url = f"/v1/screenings/{body['id']}/personal"

    # Before: readable for a stated purpose, and only with one.
    read = await http.get(url, params={"purpose": "care_coordination"}, headers=bearer(clinic))
    assert read.status_code == 200
    assert read.json()["personal"]["subject.name"] == CANARY_NAME
    no_purpose = await http.get(url, headers=bearer(admin))
    assert no_purpose.status_code == 422
    async with app.state.sessionmaker() as session:
        subject = (await session.execute(select(Subject))).scalar_one()
        wrapped = subject.wrapped_dek
    assert wrapped is not None

    erased = await http.post(
        "/v1/erasures",
        json={
            "organisation": ORG,
            "case_code": body["subject"]["case_code"],
            "reason": "data_subject_request",
        },
        headers=bearer(admin),
    )
    assert erased.status_code == 201, erased.text
    assert erased.json()["screenings_made_unreadable"] == 1

    # After: nothing personal is readable, even for an admin with a purpose.
    after = await http.get(url, params={"purpose": "data_subject_request"}, headers=bearer(admin))
    assert after.status_code == 200
    assert after.json() == {
        "screening_id": body["id"],
        "purpose": "data_subject_request",
        "erased": True,
        "personal": {},
    }
    # The non-personal record stays for statistics.
    kept = await http.get(f"/v1/screenings/{body['id']}", headers=bearer(clinic))
    assert kept.status_code == 200
    assert kept.json()["screening"]["subject"]["region"] == "madre_de_dios"

    # Neither the canaries nor the wrapped key are anywhere in the database.
    await app.state.engine.dispose()
    raw = _database_bytes(settings.database_url)
    assert CANARY_NAME.encode() not in raw
    assert CANARY_NOTE.encode() not in raw
    assert wrapped not in raw
    assert wrapped.hex().encode() not in raw

    async with sessionmaker() as session:
        report = await verify_database(session, settings)
        actions = [
            e.action
            for e in (await session.execute(select(AuditEvent).order_by(AuditEvent.seq))).scalars()
        ]
    assert report.ok, report
    assert "subject.erased" in actions
    assert actions.count("personal_data.read") == 2
