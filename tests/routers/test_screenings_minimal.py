"""``Prefer: return=minimal`` on POST /v1/screenings and its batch: the minimal receipt."""

from __future__ import annotations

import gzip
import json
from typing import Any

import httpx
from fastapi import FastAPI

from app.schemas.outcome import MinimalReceipt
from tests.conftest import KeyFactory, bearer
from tests.factories import screening
from tests.test_openapi import validator

ORG = "Caravana de la Vida"
MINIMAL = {"Prefer": "return=minimal"}


def _errors(app: FastAPI, component: str, value: Any) -> list[str]:
    """``value`` against ``#/components/schemas/<component>`` of the app's own document."""
    doc = json.loads(json.dumps(app.openapi()))
    check = validator(doc, {"$ref": f"#/components/schemas/{component}"})
    return [f"{e.instance_path}: {e.message}" for e in check.iter_errors(value)]


def _spanish_reasons(full: dict[str, Any]) -> list[list[str]]:
    return [[r["text"]["es"] for r in ref["reasons"]] for ref in full["decision"]["referrals"]]


async def test_a_minimal_receipt_has_no_trace_and_reasons_in_spanish(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    key = await api_key("clinic", ORG)
    body = screening()
    response = await http.post(
        "/v1/screenings",
        json=body,
        headers={**bearer(key), **MINIMAL, "Accept-Language": "es-PE, en;q=0.5"},
    )
    assert response.status_code == 201, response.text
    assert response.headers["preference-applied"] == "return=minimal"
    assert "Prefer" in response.headers["vary"]
    assert response.headers["content-language"] == "es"
    assert response.headers["location"] == f"/v1/screenings/{body['id']}"
    minimal = response.json()
    assert _errors(app, "MinimalReceipt", minimal) == []
    MinimalReceipt.model_validate(minimal)
    assert "trace" not in response.text
    assert "decision" not in minimal
    assert minimal["id"] == body["id"]
    assert minimal["href"] == f"/v1/screenings/{body['id']}"
    assert minimal["language"] == "es"
    assert minimal["status"] == "decided"
    assert minimal["replayed"] is False
    # The full decision is one GET away, and the minimal one says the same thing.
    full = (await http.get(minimal["href"], headers=bearer(key))).json()
    referrals = full["decision"]["referrals"]
    assert [r["id"] for r in minimal["referrals"]] == [r["id"] for r in referrals]
    assert [r["reasons"] for r in minimal["referrals"]] == _spanish_reasons(full)
    assert any("ñ" in text or "ó" in text for r in minimal["referrals"] for text in r["reasons"])
    for short, long in zip(minimal["referrals"], referrals, strict=True):
        for field in ("service", "recipient", "urgency", "legal_basis", "status"):
            assert short[field] == long[field]
        assert short.get("partner") == long["partner"]
        assert short.get("needs_human", False) == long["needs_human"]
        if long["respond_by"] is None:
            assert "respond_by" not in short
        else:
            assert short["respond_by"].endswith("Z")
            assert long["respond_by"].startswith(short["respond_by"][:-1])
    # No field at its default is sent: no null, no false beside the replay flag.
    flat = json.dumps(minimal)
    assert "null" not in flat
    assert flat.count("false") == 1


async def test_english_by_default_and_the_replay_is_minimal_too(
    http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    key = await api_key("clinic", ORG)
    body = screening()
    first = await http.post("/v1/screenings", json=body, headers={**bearer(key), **MINIMAL})
    assert first.status_code == 201
    assert first.headers["content-language"] == "en"
    again = await http.post("/v1/screenings", json=body, headers={**bearer(key), **MINIMAL})
    assert again.status_code == 200
    assert again.headers["preference-applied"] == "return=minimal"
    replay = again.json()
    assert replay["replayed"] is True
    assert {k: v for k, v in replay.items() if k != "replayed"} == {
        k: v for k, v in first.json().items() if k != "replayed"
    }
    full = (await http.get(replay["href"], headers=bearer(key))).json()
    english = [[r["text"]["en"] for r in ref["reasons"]] for ref in full["decision"]["referrals"]]
    assert [r["reasons"] for r in replay["referrals"]] == english


async def test_without_the_preference_the_receipt_is_full(
    http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    key = await api_key("clinic", ORG)
    for prefer in (None, "return=representation", "respond-async"):
        headers = {**bearer(key), **({"Prefer": prefer} if prefer else {})}
        response = await http.post("/v1/screenings", json=screening(), headers=headers)
        assert response.status_code == 201
        assert "preference-applied" not in response.headers
        assert "Prefer" in response.headers["vary"]
        assert "trace" in response.json()["decision"]


async def test_a_batch_with_prefer_minimal_answers_minimal_receipts(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    key = await api_key("clinic", ORG)
    replayed = screening()
    assert (await http.post("/v1/screenings", json=replayed, headers=bearer(key))).is_success
    bad = screening()
    bad["subject"]["age"] = "sixteen"
    items = [screening(), replayed, bad, screening()]
    sent = gzip.compress(json.dumps({"screenings": items}).encode())
    response = await http.post(
        "/v1/screenings/batch",
        content=sent,
        headers={
            **bearer(key),
            **MINIMAL,
            "Accept-Language": "es",
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
        },
    )
    assert response.status_code == 200, response.text
    assert response.headers["preference-applied"] == "return=minimal"
    assert response.headers["content-language"] == "es"
    answer = response.json()
    assert _errors(app, "BatchResult", answer) == []
    assert (answer["created"], answer["replayed"], answer["failed"]) == (2, 1, 1)
    assert "trace" not in response.text
    statuses = [item["status"] for item in answer["results"]]
    assert statuses == ["created", "replayed", "invalid", "created"]
    for item in answer["results"]:
        if item["receipt"] is None:
            assert item["problem"]["status"] == 422
            continue
        assert _errors(app, "MinimalReceipt", item["receipt"]) == []
        assert item["receipt"]["language"] == "es"
        assert item["receipt"]["replayed"] is (item["status"] == "replayed")
        assert item["receipt"]["referrals"]


async def test_a_batch_without_the_preference_keeps_full_receipts(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    key = await api_key("clinic", ORG)
    response = await http.post(
        "/v1/screenings/batch", json={"screenings": [screening()]}, headers=bearer(key)
    )
    assert response.status_code == 200
    assert "preference-applied" not in response.headers
    answer = response.json()
    assert _errors(app, "BatchResult", answer) == []
    assert _errors(app, "ScreeningReceipt", answer["results"][0]["receipt"]) == []
    assert "trace" in answer["results"][0]["receipt"]["decision"]


def test_the_document_offers_both_receipts(app: FastAPI) -> None:
    doc = json.loads(json.dumps(app.openapi()))
    operation = doc["paths"]["/v1/screenings"]["post"]
    refs = [
        {"$ref": "#/components/schemas/ScreeningReceipt"},
        {"$ref": "#/components/schemas/MinimalReceipt"},
    ]
    for status in ("200", "201"):
        media = operation["responses"][status]["content"]["application/json"]
        assert media["schema"] == {"oneOf": refs}
        examples = media["examples"]
        assert set(examples) == {"full", "minimal"}
        # Each example is exactly one of the two.
        check_full = validator(doc, refs[0])
        check_minimal = validator(doc, refs[1])
        assert check_full.is_valid(examples["full"]["value"])
        assert not check_minimal.is_valid(examples["full"]["value"])
        assert check_minimal.is_valid(examples["minimal"]["value"])
        assert not check_full.is_valid(examples["minimal"]["value"])
    assert "return=minimal" in operation["description"]
    minimal = doc["components"]["schemas"]["MinimalReceipt"]
    assert minimal["additionalProperties"] is False
    assert "decision" not in minimal["properties"]
