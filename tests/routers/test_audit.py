"""The auditors' API."""

from __future__ import annotations

import base64
import io
import json
import uuid

import httpx
import pytest
from fastapi import FastAPI

from app import audit
from app.audit import Action, store
from app.audit.chain import load_public_key
from app.audit.proofs import verify_bundle
from app.audit.reader import read_checkpoints, read_export, verify_export
from app.routers import audit as audit_router
from app.settings import Settings
from tests.audit.conftest import add_events, tamper
from tests.conftest import KeyFactory, bearer


@pytest.fixture
def audit_app(app: FastAPI, settings: Settings) -> FastAPI:
    """The app with the audit router (until app.main includes it) and audited sessions."""
    if not any(getattr(r, "path", "") == "/v1/audit/events" for r in app.routes):
        app.include_router(audit_router.router)
    audit.configure_sessionmaker(app.state.sessionmaker, settings)
    return app


@pytest.fixture
async def auditor(audit_app: FastAPI, api_key: KeyFactory) -> dict[str, str]:
    return bearer(await api_key("auditor", name="dpo"))


async def test_only_auditors(
    audit_app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    clinic = bearer(await api_key("clinic", "Caravana de la Vida"))
    for path in ("events", "verify", "checkpoints", "export", "public-key"):
        assert (await http.get(f"/v1/audit/{path}")).status_code == 401
        response = await http.get(f"/v1/audit/{path}", headers=clinic)
        assert response.status_code == 403, path
        assert response.headers["content-type"] == "application/problem+json"


async def test_events_filters_and_cursor(
    audit_app: FastAPI, http: httpx.AsyncClient, auditor: dict[str, str]
) -> None:
    await add_events(audit_app.state.sessionmaker, 40, per_transaction=10)
    seen: list[int] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 7}
        if cursor:
            params["cursor"] = cursor
        page = (await http.get("/v1/audit/events", params=params, headers=auditor)).json()
        seen += [e["seq"] for e in page["events"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    # 40 events after the rule set's loading (seq 1) and the auditor's creation (seq 2).
    assert seen == list(range(1, 43))

    decisions = await http.get(
        "/v1/audit/events", params={"action": "decision.made"}, headers=auditor
    )
    assert {e["action"] for e in decisions.json()["events"]} == {"decision.made"}
    assert len(decisions.json()["events"]) == 10
    by_actor = await http.get(
        "/v1/audit/events", params={"actor": "delivery-worker"}, headers=auditor
    )
    assert {e["actor"]["id"] for e in by_actor.json()["events"]} == {"delivery-worker"}
    by_partner = await http.get(
        "/v1/audit/events", params={"partner_id": "hospital-santa-rosa"}, headers=auditor
    )
    assert len(by_partner.json()["events"]) == 10
    one = by_partner.json()["events"][0]
    by_referral = await http.get(
        "/v1/audit/events", params={"referral_id": one["refs"]["referral_id"]}, headers=auditor
    )
    assert [e["seq"] for e in by_referral.json()["events"]] == [one["seq"]]
    by_screening = await http.get(
        "/v1/audit/events",
        params={"screening_id": str(uuid.UUID(int=10))},
        headers=auditor,
    )
    assert all(
        e["refs"]["screening_id"] == str(uuid.UUID(int=10)) for e in by_screening.json()["events"]
    )
    first_time = seen and decisions.json()["events"][0]["occurred_at"]
    windowed = await http.get("/v1/audit/events", params={"since": first_time}, headers=auditor)
    assert windowed.status_code == 200
    bad = await http.get("/v1/audit/events", params={"cursor": "nope"}, headers=auditor)
    assert bad.status_code == 400
    assert bad.json()["type"] == "/problems/bad-request"
    too_many = await http.get("/v1/audit/events", params={"limit": 10_000}, headers=auditor)
    assert too_many.status_code == 422


async def test_verify_checkpoints_public_key_and_export_round_trip(
    audit_app: FastAPI, http: httpx.AsyncClient, auditor: dict[str, str], settings: Settings
) -> None:
    await add_events(audit_app.state.sessionmaker, 25, per_transaction=5)
    async with audit_app.state.sessionmaker() as session:
        await audit.checkpoint_if_due(session, settings, force=True)
        await session.commit()

    verified = (await http.get("/v1/audit/verify", headers=auditor)).json()
    assert verified["ok"] is True
    # 25 events after the rule set's loading (seq 1) and the auditor's creation (seq 2).
    assert verified["last_seq"] == 27
    assert verified["first_bad_seq"] is None

    key = (await http.get("/v1/audit/public-key", headers=auditor)).json()
    public_key = load_public_key(key["public_key"])
    assert load_public_key(key["pem"]) == public_key

    held = (await http.get("/v1/audit/checkpoints", headers=auditor)).json()
    assert [c["seq"] for c in held["checkpoints"]] == [27]
    kept = read_checkpoints(io.StringIO("\n".join(json.dumps(c) for c in held["checkpoints"])))

    response = await http.get("/v1/audit/export", params={"format": "ndjson"}, headers=auditor)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = response.text.splitlines()
    # The export ends with a checkpoint signed over its last event.
    assert json.loads(lines[-1])["type"] == "checkpoint"
    assert json.loads(lines[-1])["export"] is True
    export = read_export(lines)
    # The verify call itself was recorded (seq 28) before the export was planned.
    assert [e.seq for e in export.events] == list(range(1, 29))
    assert export.events[-1].action == Action.audit_verified.value
    report = verify_export(export, public_key, kept)
    assert report.ok, report

    csv_response = await http.get("/v1/audit/export", params={"format": "csv"}, headers=auditor)
    assert csv_response.headers["content-type"].startswith("text/csv")
    from_csv = read_export(csv_response.text.splitlines(), "csv")
    assert verify_export(from_csv, public_key, kept).ok
    # The export itself was recorded.
    events = (
        await http.get("/v1/audit/events", params={"action": "audit.exported"}, headers=auditor)
    ).json()["events"]
    assert len(events) == 2
    assert events[0]["data"]["format"] == "ndjson"


HUGE_CURSOR = base64.urlsafe_b64encode(b"audit:" + b"9" * 30).decode().rstrip("=")


@pytest.mark.parametrize(
    ("path", "params", "parameter"),
    [
        ("/v1/audit/events", {"cursor": HUGE_CURSOR}, "query.cursor"),
        ("/v1/audit/checkpoints", {"cursor": HUGE_CURSOR}, "query.cursor"),
        ("/v1/audit/export", {"from_seq": str(10**20)}, "query.from_seq"),
        ("/v1/audit/export", {"to_seq": str(10**20)}, "query.to_seq"),
        ("/v1/audit/events", {"until": "9999-12-31T23:59:59.999999-14:00"}, "query.until"),
        ("/v1/audit/events", {"since": "0001-01-01T00:00:00+14:00"}, "query.since"),
        ("/v1/audit/export", {"until": "9999-12-31T23:59:59.999999-14:00"}, "query.until"),
    ],
)
async def test_bad_query_values_are_problems_naming_the_parameter(
    audit_app: FastAPI,
    http: httpx.AsyncClient,
    auditor: dict[str, str],
    path: str,
    params: dict[str, str],
    parameter: str,
) -> None:
    """Each of these was a 500 (an integer beyond BIGINT, a time beyond year 9999 in UTC)."""
    response = await http.get(path, params=params, headers=auditor)
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert parameter in [e["path"] for e in response.json()["errors"]]


async def test_export_of_a_truncated_chain_is_refused_with_the_reason(
    audit_app: FastAPI, http: httpx.AsyncClient, auditor: dict[str, str], settings: Settings
) -> None:
    await add_events(audit_app.state.sessionmaker, 20, per_transaction=5)
    async with audit_app.state.sessionmaker() as session:
        await audit.checkpoint_if_due(session, settings, force=True)
        await session.commit()
        head = await store.head(session)
    await tamper(
        audit_app.state.sessionmaker,
        settings,
        "DELETE FROM audit_events WHERE seq > :n",
        params={"n": head[0] - 3},
    )
    response = await http.get("/v1/audit/export", headers=auditor)
    assert response.status_code == 409
    problem = response.json()
    assert (problem["type"], problem["reason"]) == ("/problems/audit-chain-broken", "truncated")
    assert problem["checkpoint_seq"] == head[0]


async def test_proofs_over_http_check_offline(
    audit_app: FastAPI, http: httpx.AsyncClient, auditor: dict[str, str], settings: Settings
) -> None:
    await add_events(audit_app.state.sessionmaker, 40, per_transaction=10)
    key = audit.AuditConfig.from_settings(settings).signer.public_key
    response = await http.get(
        f"/v1/audit/proofs/screenings/{uuid.UUID(int=10)}/disclosures", headers=auditor
    )
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["entries"] == []  # sample events disclose nothing for it
    referral = str(uuid.UUID(int=3 + 7))
    bundle = (await http.get(f"/v1/audit/proofs/referrals/{referral}", headers=auditor)).json()
    assert [e["event"]["refs"]["referral_id"] for e in bundle["entries"]] == [referral]
    assert verify_bundle(bundle, key).ok
    size = bundle["checkpoint"]["seq"]
    await add_events(audit_app.state.sessionmaker, 5)
    consistency = await http.get(
        "/v1/audit/proofs/consistency", params={"from_size": size}, headers=auditor
    )
    assert consistency.status_code == 200, consistency.text
    assert consistency.json()["to_size"] > size
    assert verify_bundle(consistency.json(), key).ok
    beyond = await http.get(
        "/v1/audit/proofs/consistency", params={"from_size": 10**6}, headers=auditor
    )
    assert (beyond.status_code, beyond.json()["errors"][0]["path"]) == (404, "query.from_size")
    unknown = await http.get(
        f"/v1/audit/proofs/referrals/{referral}", params={"size": 3}, headers=auditor
    )
    assert unknown.status_code == 404
    assert unknown.json()["errors"][0]["path"] == "query.size"
    nowhere = await http.get(f"/v1/audit/proofs/referrals/{uuid.uuid4()}", headers=auditor)
    assert nowhere.status_code == 404
