"""GET /v1/referrals: its query parameters, on SQLite and PostgreSQL. (The referral
lifecycle is tested in tests/referrals/.)"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import KeyFactory, bearer
from tests.factories import screening

REFERRAL_ID = "6c0b1f7e-0a53-4b51-9d55-3c3f4c2b8e10"


@pytest.fixture
async def served(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """As uvicorn serves it: an unhandled error is a 500 answer, not an exception here."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://ruta.test") as client:
        yield client


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("created_from", "2026-11-20T00:00:00"),  # no offset
        ("created_from", "2026-11-20"),  # a bare date
        ("created_to", "0001-01-01T00:00:00+14:00"),  # year 0 in UTC
        ("created_to", "9999-12-31T23:59:59.999999-14:00"),  # year 10000 in UTC
        ("created_from", "1763596800"),  # a Unix time
    ],
)
async def test_a_time_without_an_offset_or_outside_utc_is_422_naming_the_parameter(
    served: httpx.AsyncClient, api_key: KeyFactory, name: str, value: str
) -> None:
    auditor = bearer(await api_key("auditor"))
    response = await served.get("/v1/referrals", params={name: value}, headers=auditor)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["path"] for e in response.json()["errors"]] == [f"query.{name}"]


@pytest.mark.parametrize(
    "position",
    [
        f"2026-11-20T10:00:00|{REFERRAL_ID}",  # no offset
        f"2026-11-20|{REFERRAL_ID}",  # a bare date
        f"0001-01-01T00:00:00+14:00|{REFERRAL_ID}",  # year 0 in UTC
        "2026-11-20T10:00:00+00:00|not-a-uuid",
        "2026-11-20T10:00:00+00:00",
    ],
)
async def test_a_cursor_this_service_did_not_write_is_400(
    served: httpx.AsyncClient, api_key: KeyFactory, position: str
) -> None:
    auditor = bearer(await api_key("auditor"))
    response = await served.get(
        "/v1/referrals", params={"cursor": _cursor(position)}, headers=auditor
    )
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "cursor" in response.json()["detail"]


async def test_times_with_any_offset_filter_and_page(
    http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    clinic = bearer(await api_key("clinic", "Caravana de la Vida"))
    assert (await http.post("/v1/screenings", json=screening(), headers=clinic)).status_code == 201
    auditor = bearer(await api_key("auditor"))
    everything = (await http.get("/v1/referrals", headers=auditor)).json()["items"]
    assert len(everything) >= 2
    created = everything[0]["created_at"]
    for params, expected in (
        ({"created_from": "2000-01-01T00:00:00-05:00"}, len(everything)),
        ({"created_to": "2000-01-01T00:00:00+14:00"}, 0),
        ({"created_from": "0001-01-01T00:00:00Z", "created_to": "9999-12-31T23:59:59Z"}, None),
        ({"created_to": created}, None),
    ):
        response = await http.get("/v1/referrals", params=params, headers=auditor)
        assert response.status_code == 200, (params, response.text)
        if expected is not None:
            assert len(response.json()["items"]) == expected, params
    first = (await http.get("/v1/referrals", params={"limit": 1}, headers=auditor)).json()
    following = await http.get(
        "/v1/referrals", params={"limit": 1, "cursor": first["next_cursor"]}, headers=auditor
    )
    assert following.status_code == 200
    assert following.json()["items"][0]["id"] != first["items"][0]["id"]
