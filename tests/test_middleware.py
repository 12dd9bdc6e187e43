"""Every response says ``Cache-Control: no-store``. NUL characters anywhere in a request are
a 422 naming the field, never a 500 from deep in a PostgreSQL query (it cannot store NUL in
text or JSON); a JSON body that is not UTF-8 is a 415 before any parser sees it. Both
engines."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.main import create_app
from app.models import Screening
from app.settings import Environment, Settings
from tests.conftest import KeyFactory, bearer
from tests.delivery.conftest import add_partner, partner_document, submit
from tests.delivery.partner_server import SECRET
from tests.factories import screening

URL = "http://127.0.0.1:9/inbox"


def only_error(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    [error] = response.json()["errors"]
    assert error["code"] == "nul_character"
    return dict(error)


@pytest.mark.parametrize(
    ("route", "role", "field"),
    [
        ("/v1/referrals?region=madre%00de_dios", "auditor", "query.region"),
        ("/v1/referrals?partner_id=a%00", "auditor", "query.partner_id"),
        ("/v1/audit/events?actor=x%00y", "auditor", "query.actor"),
        ("/v1/partners/a%00b", "admin", "path"),
    ],
)
async def test_nul_in_the_url_is_a_422(
    http: httpx.AsyncClient, api_key: KeyFactory, route: str, role: str, field: str
) -> None:
    key = await api_key(role)
    error = only_error(await http.get(route, headers=bearer(key)))
    assert error["path"] == field


async def test_nul_in_a_json_body_is_a_422_naming_its_path(
    http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    admin = bearer(await api_key("admin"))
    document = partner_document("nul-test", URL, name="Casa\x00Refugio")
    error = only_error(await http.post("/v1/partners", json=document, headers=admin))
    assert error["path"] == "name"
    assert error["pointer"] == "#/name"

    clinic = bearer(await api_key("clinic", "Caravana de la Vida"))
    body = screening(subject__case_code="CASE\x00-1")
    error = only_error(await http.post("/v1/screenings", json=body, headers=clinic))
    assert error["path"] == "subject.case_code"
    # In Spanish too, like every validation error.
    spanish = await http.post(
        "/v1/screenings", json=body, headers={**clinic, "Accept-Language": "es"}
    )
    assert spanish.status_code == 422
    assert spanish.headers["content-language"] == "es"
    assert spanish.json()["errors"][0]["message"] == "No debe contener caracteres NUL"


async def test_a_nul_in_a_key_that_is_not_an_identifier_withholds_the_key(
    http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    clinic = bearer(await api_key("clinic", "Caravana de la Vida"))
    body = screening()
    body["subject"]["María\x00Quispe"] = 1
    error = only_error(await http.post("/v1/screenings", json=body, headers=clinic))
    assert error["path"] == "subject.<withheld>"
    auditor = bearer(await api_key("auditor"))
    response = await http.get("/v1/referrals?Mar%C3%ADa%20Quispe=a%00", headers=auditor)
    assert only_error(response)["path"] == "query.<withheld>"
    assert "Quispe" not in response.text


async def test_the_text_backslash_u0000_is_not_a_nul(
    http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    admin = bearer(await api_key("admin"))
    document = partner_document("literal-escape", URL, description="escape: \\u0000 is text")
    response = await http.post("/v1/partners", json=document, headers=admin)
    assert response.status_code == 201, response.text
    assert response.json()["description"] == "escape: \\u0000 is text"


#: Python's JSON reader detects all of these; RFC 8259 §8.1 allows only UTF-8.
NOT_UTF8 = ("utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be", "latin-1")


@pytest.mark.parametrize("encoding", NOT_UTF8)
async def test_a_json_body_that_is_not_utf8_is_a_415_before_it_is_read(
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    sessionmaker: async_sessionmaker[AsyncSession],
    encoding: str,
) -> None:
    admin = bearer(await api_key("admin"))
    clinic = bearer(await api_key("clinic", "Caravana de la Vida"))
    erasure = {"organisation": "Caravana de la Vida", "case_code": "CASO-Ñ", "reason": "error"}
    # "utf-16" and "utf-32" write a byte order mark, the others do not.
    for route, body, key in (
        ("/v1/erasures", erasure, admin),
        ("/v1/screenings", screening(subject__name="María Quispe"), clinic),
    ):
        response = await http.post(
            route,
            content=json.dumps(body, ensure_ascii=False).encode(encoding),
            headers={**key, "content-type": "application/json"},
        )
        assert response.status_code == 415, (route, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert "UTF-8" in response.json()["detail"]
    async with sessionmaker() as session:
        assert (await session.execute(select(func.count(Screening.id)))).scalar_one() == 0


async def test_utf8_with_or_without_a_byte_order_mark_is_read(
    http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    clinic = bearer(await api_key("clinic", "Caravana de la Vida"))
    for encoding in ("utf-8", "utf-8-sig"):
        body = screening(subject__name="María Quispe")
        response = await http.post(
            "/v1/screenings",
            content=json.dumps(body, ensure_ascii=False).encode(encoding),
            headers={**clinic, "content-type": "application/json"},
        )
        assert response.status_code == 201, (encoding, response.text)


async def test_json_nested_too_deep_to_read_is_a_400_even_with_a_nul(
    app: FastAPI, api_key: KeyFactory
) -> None:
    clinic = bearer(await api_key("clinic", "Caravana de la Vida"))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://ruta.test") as http:
        for body in ("[" * 100_000, "[" * 100_000 + '"\\u0000"'):
            response = await http.post(
                "/v1/screenings",
                content=body,
                headers={**clinic, "content-type": "application/json"},
            )
            assert response.status_code == 400, response.text
            assert response.json()["type"] == "/problems/bad-request"


async def test_a_nul_deep_inside_a_readable_document_is_found(
    http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    clinic = bearer(await api_key("clinic", "Caravana de la Vida"))
    body = screening()
    body["notes"] = [[[["x", {"deep": "a\x00b"}]]]]
    error = only_error(await http.post("/v1/screenings", json=body, headers=clinic))
    assert error["path"] == "notes.0.0.0.1.deep"


@pytest.fixture
async def development_app(settings: Settings) -> AsyncIterator[FastAPI]:
    """Development mode mounts the demo partner inboxes too: every route there is."""
    application = create_app(settings.model_copy(update={"env": Environment.development}))
    async with application.router.lifespan_context(application):
        yield application


async def test_every_route_answers_no_store_whoever_asks(
    development_app: FastAPI, settings: Settings
) -> None:
    """Walks the app's routes, so a new route is covered as soon as it exists: each answers
    ``Cache-Control: no-store`` to no key and to an admin's, whatever its status."""
    from tests.conftest import key_factory

    admin = bearer(await key_factory(development_app, settings)("admin"))
    transport = httpx.ASGITransport(app=development_app, raise_app_exceptions=False)
    seen: set[str] = set()
    async with httpx.AsyncClient(transport=transport, base_url="http://ruta.test") as http:
        for route in _routes(development_app):
            path = str(getattr(route, "path_format", None) or route.path)
            url = re.sub(r"\{[^}]+\}", "6c0b1f7e-0a53-4b51-9d55-3c3f4c2b8e10", path)
            for method in sorted(set(getattr(route, "methods", None) or {"GET"}) - {"HEAD"}):
                seen.add(f"{method} {path}")
                for headers in ({}, admin):
                    body: dict[str, Any] | None = None if method == "GET" else {}
                    response = await http.request(method, url, json=body, headers=headers)
                    assert response.headers.get("cache-control") == "no-store", (
                        method,
                        path,
                        response.status_code,
                    )
        # What the framework and the other middleware answer themselves.
        for method, url, content in (
            ("GET", "/nowhere", None),
            ("DELETE", "/v1/screenings", None),
            ("POST", "/v1/screenings", b" " * (settings.max_body_bytes + 1)),
            ("POST", "/v1/screenings", "{}".encode("utf-16")),
            ("GET", "/v1/referrals?region=a%00", None),
        ):
            response = await http.request(
                method, url, content=content, headers={**admin, "content-type": "application/json"}
            )
            assert response.status_code >= 400
            assert response.headers.get("cache-control") == "no-store", (method, url)
    assert len(seen) > 30
    assert {
        "GET /v1/screenings/{screening_id}/personal",
        "GET /v1/referrals/{referral_id}/details",
        "GET /v1/audit/export",
        "POST /v1/erasures",
        "GET /demo/partners/{partner_id}/inbox",
    } <= seen


def _routes(app: FastAPI) -> list[Any]:
    """Every route, those of included routers too (FastAPI keeps them per router)."""
    found = []
    for route in app.routes:
        contexts = getattr(route, "effective_route_contexts", None)
        found += list(contexts()) if callable(contexts) else [route]
    return found


async def test_personal_data_is_answered_no_store(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    """The answers that carry personal fields, each a success."""
    await add_partner(
        http,
        api_key,
        "thin-legal",
        URL,
        endpoint={"url": URL, "secrets": [SECRET], "thin": True},
    )
    receipt = await submit(http, api_key, subject__name="CANARY-NOSTORE")
    referral_id = receipt["decision"]["referrals"][0]["id"]
    clinic = bearer(await api_key("clinic", "Caravana de la Vida"))
    partner = bearer(await api_key("partner", "thin-legal"))
    auditor = bearer(await api_key("auditor"))
    admin = bearer(await api_key("admin"))
    answers = [
        await http.get(
            f"/v1/screenings/{receipt['id']}/personal",
            params={"purpose": "care_coordination"},
            headers=clinic,
        ),
        await http.get(f"/v1/referrals/{referral_id}/details", headers=partner),
        await http.get("/v1/audit/export", params={"format": "ndjson"}, headers=auditor),
        await http.get(f"/v1/screenings/{receipt['id']}", headers=clinic),
    ]
    answers.append(
        await http.post(
            "/v1/erasures",
            json={
                "organisation": "Caravana de la Vida",
                "case_code": answers[-1].json()["screening"]["subject"]["case_code"],
                "reason": "data_subject_request",
            },
            headers=admin,
        )
    )
    assert "CANARY-NOSTORE" in answers[0].text
    for response in answers:
        assert response.status_code in (200, 201), (response.request.url, response.text)
        assert response.headers["cache-control"] == "no-store", response.request.url
