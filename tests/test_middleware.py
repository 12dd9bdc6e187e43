"""NUL characters anywhere in a request are a 422 naming the field, never a 500 from deep in
a PostgreSQL query (it cannot store NUL in text or JSON). Both engines."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import KeyFactory, bearer
from tests.delivery.conftest import partner_document
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


async def test_the_text_backslash_u0000_is_not_a_nul(
    http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    admin = bearer(await api_key("admin"))
    document = partner_document("literal-escape", URL, description="escape: \\u0000 is text")
    response = await http.post("/v1/partners", json=document, headers=admin)
    assert response.status_code == 201, response.text
    assert response.json()["description"] == "escape: \\u0000 is text"
