from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.metrics import DECISIONS
from app.models import Referral, Screening
from tests.conftest import KeyFactory, bearer, counter_total, refuse_inserts
from tests.factories import screening

ORG = "Caravana de la Vida"


async def _count(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    async with sessionmaker() as session:
        return int((await session.execute(select(func.count(Screening.id)))).scalar_one())


async def test_post_screening_returns_201_and_location(
    http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    key = await api_key("clinic", ORG)
    body = screening()
    response = await http.post("/v1/screenings", json=body, headers=bearer(key))
    assert response.status_code == 201, response.text
    receipt = response.json()
    assert receipt["id"] == body["id"]
    assert receipt["organisation"] == ORG
    assert receipt["replayed"] is False
    assert response.headers["location"] == f"/v1/screenings/{body['id']}"


async def test_idempotent_replay_stores_one_row(
    http: httpx.AsyncClient, api_key: KeyFactory, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    key = await api_key("clinic", ORG)
    body = screening()
    first = await http.post("/v1/screenings", json=body, headers=bearer(key))
    # Same body, different key order and whitespace: still the same screening.
    reordered = json.dumps(dict(reversed(list(body.items()))), indent=2)
    second = await http.post(
        "/v1/screenings",
        content=reordered,
        headers={**bearer(key), "content-type": "application/json"},
    )
    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json()["replayed"] is True
    assert second.json()["received_at"] == first.json()["received_at"]
    assert await _count(sessionmaker) == 1


async def test_conflicting_replay_is_409(
    http: httpx.AsyncClient, api_key: KeyFactory, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    key = await api_key("clinic", ORG)
    body = screening()
    assert (await http.post("/v1/screenings", json=body, headers=bearer(key))).status_code == 201
    changed = {**body, "subject": {**body["subject"], "age": 17}}
    response = await http.post("/v1/screenings", json=changed, headers=bearer(key))
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "/problems/conflict"
    assert await _count(sessionmaker) == 1


async def test_unknown_field_is_422_naming_its_path(
    http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    key = await api_key("clinic", ORG)
    body = screening()
    body["subject"]["nmae"] = "CANARY-NAME-7731"
    response = await http.post("/v1/screenings", json=body, headers=bearer(key))
    assert response.status_code == 422
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["path"] for e in problem["errors"]] == ["subject.nmae"]
    assert problem["errors"][0]["pointer"] == "#/subject/nmae"
    assert "CANARY-NAME-7731" not in response.text


async def test_an_unknown_field_whose_name_is_not_an_identifier_is_withheld(
    http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    key = await api_key("clinic", ORG)
    body = screening()
    body["subject"]["María Quispe +51 999 888 777"] = True
    body["safety"]["bunker"] = True
    response = await http.post("/v1/screenings", json=body, headers=bearer(key))
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert sorted(e["path"] for e in errors) == ["safety.bunker", "subject.<withheld>"]
    assert "Quispe" not in response.text
    assert "999" not in response.text


async def test_invalid_value_names_path_and_never_echoes_input(
    http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    key = await api_key("clinic", ORG)
    body = screening(subject__contact={"phone": "CANARY-PHONE-not-a-number"})
    response = await http.post("/v1/screenings", json=body, headers=bearer(key))
    assert response.status_code == 422
    assert [e["path"] for e in response.json()["errors"]] == ["subject.contact.phone"]
    assert "CANARY-PHONE" not in response.text


async def test_oversized_body_is_413(
    http: httpx.AsyncClient, api_key: KeyFactory, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    key = await api_key("clinic", ORG)
    body = screening(notes="x" * (3 * 1024 * 1024))
    response = await http.post("/v1/screenings", json=body, headers=bearer(key))
    assert response.status_code == 413
    assert response.json()["type"] == "/problems/payload-too-large"
    assert await _count(sessionmaker) == 0


async def test_oversized_chunked_body_is_413(http: httpx.AsyncClient, api_key: KeyFactory) -> None:
    key = await api_key("clinic", ORG)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b" " * 65536

    response = await http.post(
        "/v1/screenings",
        content=chunks(),
        headers={**bearer(key), "content-type": "application/json"},
    )
    assert response.status_code == 413


async def test_malformed_json_is_400_problem(http: httpx.AsyncClient, api_key: KeyFactory) -> None:
    key = await api_key("clinic", ORG)
    response = await http.post(
        "/v1/screenings",
        content=b'{"id": ',
        headers={**bearer(key), "content-type": "application/json"},
    )
    assert response.status_code in (400, 422)
    assert response.headers["content-type"] == "application/problem+json"


async def test_future_screened_at_is_rejected(http: httpx.AsyncClient, api_key: KeyFactory) -> None:
    key = await api_key("clinic", ORG)
    body = screening(source__screened_at="2099-01-01T00:00:00Z")
    response = await http.post("/v1/screenings", json=body, headers=bearer(key))
    assert response.status_code == 422
    assert response.json()["errors"][0]["path"] == "source.screened_at"


async def test_naive_screened_at_is_rejected(http: httpx.AsyncClient, api_key: KeyFactory) -> None:
    key = await api_key("clinic", ORG)
    body = screening(source__screened_at="2026-11-20T09:40:00")
    response = await http.post("/v1/screenings", json=body, headers=bearer(key))
    assert response.status_code == 422
    assert response.json()["errors"][0]["path"] == "source.screened_at"


@pytest.mark.parametrize(
    ("date_of_birth", "code"),
    [
        ("2026-11-25", "future_date"),  # after the screening of 2026-11-20
        ("2099-01-01", "future_date"),
        ("1900-01-01", "implausible_age"),  # 126 at the screening
    ],
)
async def test_an_impossible_date_of_birth_is_refused_naming_the_field(
    http: httpx.AsyncClient, api_key: KeyFactory, date_of_birth: str, code: str
) -> None:
    key = await api_key("clinic", ORG)
    body = screening(subject__date_of_birth=date_of_birth, subject__age=...)
    response = await http.post("/v1/screenings", json=body, headers=bearer(key))
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert (error["path"], error["code"]) == ("subject.date_of_birth", code)
    assert date_of_birth not in response.text
    # In a batch the impossible item is refused alone, and the good one is stored.
    good = screening()
    bad = screening(subject__date_of_birth=date_of_birth, subject__age=...)
    batch = await http.post(
        "/v1/screenings/batch", json={"screenings": [bad, good]}, headers=bearer(key)
    )
    assert [r["status"] for r in batch.json()["results"]] == ["invalid", "created"]


async def test_a_date_of_birth_that_disputes_the_stated_age_is_read_as_the_lower_age(
    http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    """Stated 20, born 2010 (16 at the screening): the age is disputed and the person is
    treated as a child (docs/protocol.md, rule 1), not refused."""
    key = await api_key("clinic", ORG)
    body = screening(
        subject__age=20,
        subject__date_of_birth="2010-06-01",
        subject__unaccompanied_minor=False,
    )
    response = await http.post("/v1/screenings", json=body, headers=bearer(key))
    assert response.status_code == 201, response.text
    decision = response.json()["decision"]
    recipients = {(r["service"], r["recipient"]) for r in decision["referrals"]}
    assert ("protection", "child_protection_authority") in recipients
    adjusted = decision["trace"]["adjustments"]["subject.age"]
    assert adjusted == {
        "source": "disputed",
        "stated": 20,
        "from_date_of_birth": 16,
        "value": 16,
    }
    assert "2010-06-01" not in response.text
    detail = await http.get(f"/v1/screenings/{body['id']}", headers=bearer(key))
    subject = detail.json()["screening"]["subject"]
    assert (subject["age"], subject["age_disputed"], subject["age_source"]) == (
        16,
        True,
        "disputed",
    )


#: Offsets that move a timestamp outside what UTC can hold (year 0, year 10000).
OUT_OF_RANGE = ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59.999999-14:00")


@pytest.mark.parametrize("value", OUT_OF_RANGE)
@pytest.mark.parametrize("field", ["source__screened_at", "consent__recorded_at"])
async def test_a_timestamp_utc_cannot_hold_is_422_naming_the_field(
    app: FastAPI, api_key: KeyFactory, field: str, value: str
) -> None:
    key = await api_key("clinic", ORG)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://ruta.test") as http:
        response = await http.post(
            "/v1/screenings", json=screening(**{field: value}), headers=bearer(key)
        )
    assert response.status_code == 422, response.text
    assert [e["path"] for e in response.json()["errors"]] == [field.replace("__", ".")]


async def test_the_earliest_timestamps_utc_holds_are_stored(
    http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    key = await api_key("clinic", ORG)
    body = screening(
        source__screened_at="0001-01-01T00:00:00-05:00",
        consent__recorded_at="0001-01-01T00:00:00Z",
    )
    response = await http.post("/v1/screenings", json=body, headers=bearer(key))
    assert response.status_code == 201, response.text
    detail = await http.get(f"/v1/screenings/{body['id']}", headers=bearer(key))
    assert detail.json()["screened_at"].startswith("0001-01-01T05:00:00")


async def test_batch_reports_an_out_of_range_timestamp_and_stores_the_good_items(
    app: FastAPI, api_key: KeyFactory, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    key = await api_key("clinic", ORG)
    items = [
        screening(),
        screening(source__screened_at=OUT_OF_RANGE[0]),
        screening(consent__recorded_at=OUT_OF_RANGE[1]),
        screening(),
    ]
    response = await _post_batch(app, key, items)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [(r["status"], r["http_status"]) for r in results] == [
        ("created", 201),
        ("invalid", 422),
        ("invalid", 422),
        ("created", 201),
    ]
    assert results[1]["problem"]["errors"][0]["path"] == "source.screened_at"
    assert results[2]["problem"]["errors"][0]["path"] == "consent.recorded_at"
    assert await _count(sessionmaker) == 2


async def test_region_accepts_ubigeo_and_accented_names(
    http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    key = await api_key("clinic", ORG)
    for region in ("17", "170101", "madre de dios", "MADRE DE DIOS"):
        body = screening(subject__region=region)
        response = await http.post("/v1/screenings", json=body, headers=bearer(key))
        assert response.status_code == 201, (region, response.text)
        detail = await http.get(f"/v1/screenings/{body['id']}", headers=bearer(key))
        assert detail.json()["screening"]["subject"]["region"] == "madre_de_dios"
    body = screening(subject__region="Junín", subject__ubigeo=...)
    assert (await http.post("/v1/screenings", json=body, headers=bearer(key))).status_code == 201
    body = screening(subject__region="Atlantis")
    response = await http.post("/v1/screenings", json=body, headers=bearer(key))
    assert response.status_code == 422
    assert response.json()["errors"][0]["path"] == "subject.region"


async def test_get_returns_screening_without_personal_values(
    http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    key = await api_key("clinic", ORG)
    body = screening(
        subject__name="CANARY-NAME-1182",
        notes="CANARY-NOTE-1182",
        subject__date_of_birth="2010-03-04",
        subject__age=...,
    )
    assert (await http.post("/v1/screenings", json=body, headers=bearer(key))).status_code == 201
    response = await http.get(f"/v1/screenings/{body['id']}", headers=bearer(key))
    assert response.status_code == 200
    detail = response.json()
    assert "CANARY" not in response.text
    assert detail["personal_fields"] == [
        "notes",
        "safety.safe_contact",
        "subject.date_of_birth",
        "subject.name",
    ]
    assert detail["screening"]["subject"]["age_source"] == "date_of_birth"
    assert detail["screening"]["subject"]["age"] >= 16


async def test_personal_fields_are_encrypted_at_rest(
    http: httpx.AsyncClient, api_key: KeyFactory, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    key = await api_key("clinic", ORG)
    body = screening(subject__name="CANARY-NAME-5521", notes="CANARY-NOTE-5521")
    assert (await http.post("/v1/screenings", json=body, headers=bearer(key))).status_code == 201
    async with sessionmaker() as session:
        row = (await session.execute(select(Screening))).scalar_one()
    assert row.personal_ct is not None
    assert b"CANARY" not in row.personal_ct
    assert "CANARY" not in json.dumps(row.data)


async def test_source_organisation_must_match_the_client(
    http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    key = await api_key("clinic", ORG)
    body = screening(source__organisation="Someone Else")
    response = await http.post("/v1/screenings", json=body, headers=bearer(key))
    assert response.status_code == 422
    assert response.json()["errors"][0]["path"] == "source.organisation"


async def test_batch_reports_each_item_and_keeps_the_good_ones(
    http: httpx.AsyncClient, api_key: KeyFactory, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    key = await api_key("clinic", ORG)
    good_a = screening(source__screened_at="2026-11-01T08:00:00-05:00")
    good_b = screening(source__screened_at="2026-10-15T16:30:00-05:00")
    bad = screening(subject__age=-4)
    unknown = screening()
    unknown["safety"]["bunker"] = True
    existing = screening()
    assert (
        await http.post("/v1/screenings", json=existing, headers=bearer(key))
    ).status_code == 201
    conflicting = {**existing, "notes": "changed"}
    response = await http.post(
        "/v1/screenings/batch",
        json={"screenings": [good_a, bad, good_b, unknown, existing, conflicting]},
        headers=bearer(key),
    )
    assert response.status_code == 200, response.text
    result = response.json()
    statuses = [(r["index"], r["status"], r["http_status"]) for r in result["results"]]
    assert statuses == [
        (0, "created", 201),
        (1, "invalid", 422),
        (2, "created", 201),
        (3, "invalid", 422),
        (4, "replayed", 200),
        (5, "conflict", 409),
    ]
    assert result["results"][1]["problem"]["errors"][0]["path"] == "subject.age"
    assert result["results"][3]["problem"]["errors"][0]["path"] == "safety.bunker"
    assert (result["created"], result["replayed"], result["failed"]) == (2, 1, 3)
    assert await _count(sessionmaker) == 3
    # Each kept its original screened_at.
    detail = await http.get(f"/v1/screenings/{good_b['id']}", headers=bearer(key))
    assert detail.json()["screened_at"].startswith("2026-10-15T21:30:00")


async def test_a_batch_result_repeats_an_invalid_items_id_only_if_it_is_a_uuid(
    http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    key = await api_key("clinic", ORG)
    named = screening(id="María Quispe +51 999 888 777")
    uuid_but_bad = screening(subject__age=-1)
    shouting = screening(subject__age=-1, id=uuid_but_bad["id"].upper())
    response = await http.post(
        "/v1/screenings/batch",
        json={"screenings": [named, uuid_but_bad, shouting, {"id": 42}]},
        headers=bearer(key),
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["invalid"] * 4
    assert [r["id"] for r in results] == [None, uuid_but_bad["id"], uuid_but_bad["id"], None]
    assert "Quispe" not in response.text


async def test_batch_over_the_maximum_is_413(http: httpx.AsyncClient, api_key: KeyFactory) -> None:
    key = await api_key("clinic", ORG)
    items = [screening() for _ in range(101)]
    response = await http.post(
        "/v1/screenings/batch", json={"screenings": items}, headers=bearer(key)
    )
    assert response.status_code == 413
    assert response.json()["max_items"] == 100


async def test_missing_key_is_401(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/screenings", json=screening())
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"] == "application/problem+json"


async def test_wrong_key_is_401(http: httpx.AsyncClient, api_key: KeyFactory) -> None:
    key = await api_key("clinic", ORG)
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    for bad in (forged, "ruta_nonsense", "not-a-key"):
        response = await http.post("/v1/screenings", json=screening(), headers=bearer(bad))
        assert response.status_code == 401, bad


async def test_wrong_role_is_403(http: httpx.AsyncClient, api_key: KeyFactory) -> None:
    for role, org in (("partner", "Hospital Santa Rosa"), ("auditor", None)):
        key = await api_key(role, org)
        response = await http.post("/v1/screenings", json=screening(), headers=bearer(key))
        assert response.status_code == 403, role


async def test_clinic_cannot_read_another_organisations_screening(
    http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    ours = await api_key("clinic", ORG)
    theirs = await api_key("clinic", "Another Clinic")
    body = screening(subject__name="CANARY-OTHER-ORG")
    assert (await http.post("/v1/screenings", json=body, headers=bearer(ours))).status_code == 201
    response = await http.get(f"/v1/screenings/{body['id']}", headers=bearer(theirs))
    assert response.status_code == 404
    assert body["subject"]["case_code"] not in response.text
    missing = await http.get(f"/v1/screenings/{uuid.uuid4()}", headers=bearer(theirs))
    assert missing.status_code == 404
    # Indistinguishable from a screening that does not exist.
    assert response.json()["detail"] == missing.json()["detail"]


async def test_consent_policy_overrides_are_decided_and_audited(
    http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    """Regression (found by schemathesis): a child who lacks capacity and gave no consent
    fires consent-policy overrides whose ids contain a slash; intake must still succeed."""
    key = await api_key("clinic", ORG)
    body = screening(
        consent={"given": False, "lacks_capacity": True, "method": "verbal"},
        subject__unaccompanied_minor=True,
        legal={"documents_withheld": True, "unpaid_wages": True, "migration_status": "refugee"},
    )
    response = await http.post("/v1/screenings", json=body, headers=bearer(key))
    assert response.status_code == 201, response.text
    fired = {f["rule_id"] for f in response.json()["decision"]["trace"]["fired"]}
    assert "consent-policy/child-protection-duty" in fired


async def test_nul_characters_are_a_422_not_a_500(
    http: httpx.AsyncClient, api_key: KeyFactory, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    # PostgreSQL cannot store NUL in text or JSON: refused at validation, on its field.
    key = await api_key("clinic", "Caravana de la Vida")
    body = screening(source__screener="obst\x00014")
    response = await http.post("/v1/screenings", json=body, headers=bearer(key))
    assert response.status_code == 422, response.text
    assert [e["path"] for e in response.json()["errors"]] == ["source.screener"]
    assert "\x00" not in response.text
    assert await _count(sessionmaker) == 0


async def test_batch_stores_its_items_together_and_one_the_database_refuses_fails_alone(
    app: FastAPI,
    api_key: KeyFactory,
    sessionmaker: async_sessionmaker[AsyncSession],
    poisoned: str,
) -> None:
    """The valid items are written as one group; when the database refuses one of them the
    group is retried item by item: that item is `error` (500), the others are stored, and
    the same id twice in one batch is stored once and then answered as a replay."""
    key = await api_key("clinic", ORG)
    good = [screening() for _ in range(3)]
    refused = screening(subject__case_code=poisoned)
    twice = screening()
    items = [good[0], refused, twice, good[1], twice, {**twice, "notes": "changed"}, good[2]]
    response = await _post_batch(app, key, items)
    assert response.status_code == 200, response.text
    result = response.json()
    statuses = [(r["index"], r["status"], r["http_status"]) for r in result["results"]]
    assert statuses == [
        (0, "created", 201),
        (1, "error", 500),
        (2, "created", 201),
        (3, "created", 201),
        (4, "replayed", 200),
        (5, "conflict", 409),
        (6, "created", 201),
    ]
    assert "refused subjects" not in response.text  # no database detail reaches the clinic
    assert (result["created"], result["replayed"], result["failed"]) == (4, 1, 2)
    async with sessionmaker() as session:
        stored = {str(i) for i in (await session.execute(select(Screening.id))).scalars()}
    assert stored == {b["id"] for b in [*good, twice]}


async def test_batch_counts_the_decisions_it_stores_once(
    app: FastAPI,
    api_key: KeyFactory,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """The batch's group fails late (the database refuses one item's audit events, after
    every decision in the group was recorded), so the group's savepoint is rolled back and
    each item written again in its own. The metrics count the stored decisions once each,
    and none for the refused item."""
    key = await api_key("clinic", ORG)
    items = [screening() for _ in range(4)]
    refused = uuid.UUID(items[1]["id"])
    postgres = app.state.engine.dialect.name == "postgresql"
    await refuse_inserts(
        app, "audit_events", "screening_id", str(refused) if postgres else refused.hex
    )
    before = counter_total(DECISIONS)
    response = await _post_batch(app, key, items)
    assert response.status_code == 200, response.text
    statuses = [r["status"] for r in response.json()["results"]]
    assert statuses == ["created", "error", "created", "created"]
    async with sessionmaker() as session:
        referrals = (await session.execute(select(func.count()).select_from(Referral))).scalar()
    assert referrals
    assert counter_total(DECISIONS) - before == referrals


async def _post_batch(app: FastAPI, key: str, items: list[dict[str, Any]]) -> httpx.Response:
    """As uvicorn serves it: an unhandled error is a 500 answer, not an exception here."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://ruta.test") as http:
        return await http.post(
            "/v1/screenings/batch", json={"screenings": items}, headers=bearer(key)
        )
