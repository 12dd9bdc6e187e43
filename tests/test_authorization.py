"""Cases generated from app/authorization.yaml: every route × role × own/other's/missing."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.authorization import Access, development_only, load_matrix, route_keys
from app.main import create_app
from app.settings import Environment, Settings
from tests.conftest import KeyFactory, bearer
from tests.factories import screening

MATRIX = load_matrix()
OWN_ORG = "Caravana de la Vida"
OTHER_ORG = "Otra Clínica"
#: A partner organisation is known by its id (its name is only a label); clinics by name.
PARTNER_ORG = {OWN_ORG: "authz-own-org", OTHER_ORG: "authz-other-org"}


def _app_routes(app: FastAPI) -> set[str]:
    return route_keys(list(app.routes))


def test_every_route_is_in_the_matrix() -> None:
    settings = Settings(env=Environment.development)
    app = create_app(settings)
    missing = _app_routes(app) - set(MATRIX)
    assert not missing, f"routes missing from app/authorization.yaml: {sorted(missing)}"
    stale = set(MATRIX) - _app_routes(app)
    assert not stale, f"matrix entries for routes that do not exist: {sorted(stale)}"


# --- how to make an object of each kind, owned by an organisation -----------------------

ObjectMaker = Callable[[httpx.AsyncClient, KeyFactory, str], Awaitable[str]]


async def _make_screening(http: httpx.AsyncClient, api_key: KeyFactory, org: str) -> str:
    key = await api_key("clinic", org)
    body = screening()
    response = await http.post("/v1/screenings", json=body, headers=bearer(key))
    assert response.status_code == 201, response.text
    return str(body["id"])


PARTNER_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVowMTIzNDU="


def partner_body() -> dict[str, Any]:
    ident = f"authz-{uuid.uuid4().hex[:8]}"
    return {
        "id": ident,
        "organisation": {"id": PARTNER_ORG[OWN_ORG], "name": OWN_ORG},
        "name": "Authz test partner",
        "role": "health_facility",
        "services": ["medical"],
        "service_area": {"regions": ["Madre de Dios"]},
        "languages": ["es"],
        "capacity": {"available": 3, "maximum": 10},
        "endpoint": {"url": "https://partner.example.org/ruta", "secrets": [PARTNER_SECRET]},
    }


async def _make_partner(http: httpx.AsyncClient, api_key: KeyFactory, org: str) -> str:
    admin = await api_key("admin")
    body = partner_body()
    response = await http.post("/v1/partners", json=body, headers=bearer(admin))
    assert response.status_code == 201, response.text
    return str(body["id"])


async def _make_referral(http: httpx.AsyncClient, api_key: KeyFactory, org: str) -> str:
    admin = await api_key("admin")
    partner = partner_body()
    partner["organisation"] = {"id": PARTNER_ORG[org], "name": org}
    partner["services"] = ["medical", "psychological", "legal", "protection"]
    partner["capacity"] = {"available": 50, "maximum": 50}
    assert (await http.post("/v1/partners", json=partner, headers=bearer(admin))).status_code == 201
    clinic = await api_key("clinic", org)
    body = screening()
    receipt = await http.post("/v1/screenings", json=body, headers=bearer(clinic))
    assert receipt.status_code == 201, receipt.text
    referrals = receipt.json()["decision"]["referrals"]
    return str(next(r["id"] for r in referrals if r["partner"]))


async def _make_delivery(http: httpx.AsyncClient, api_key: KeyFactory, org: str) -> str:
    referral_id = await _make_referral(http, api_key, org)
    auditor = await api_key("auditor")
    explained = await http.get(f"/v1/referrals/{referral_id}", headers=bearer(auditor))
    return str(explained.json()["deliveries"][0]["id"])


async def _capacity_body(http: httpx.AsyncClient, api_key: KeyFactory) -> Any:
    await _make_partner(http, api_key, OWN_ORG)
    return {"available": 1}


OBJECT_MAKERS: dict[str, ObjectMaker] = {
    "screening_id": _make_screening,
    "partner_id": _make_partner,
    "referral_id": _make_referral,
    "delivery_id": _make_delivery,
}


BodyMaker = Callable[[httpx.AsyncClient, KeyFactory], Awaitable[Any]]


@dataclass
class Call:
    body: Callable[[], Any] | None = None
    #: For bodies that name an object: made once per request, owned by OWN_ORG.
    make_body: BodyMaker | None = None
    query: dict[str, str] | None = None
    #: Statuses that show the call was authorized (the route's own success codes).
    ok: tuple[int, ...] = (200, 201)


async def _erasure_body(http: httpx.AsyncClient, api_key: KeyFactory) -> Any:
    key = await api_key("clinic", OWN_ORG)
    body = screening()
    assert (await http.post("/v1/screenings", json=body, headers=bearer(key))).status_code == 201
    return {
        "organisation": OWN_ORG,
        "case_code": body["subject"]["case_code"],
        "reason": "data_subject_request",
    }


CALLS: dict[str, Call] = {
    "POST /v1/screenings": Call(body=screening),
    "POST /v1/screenings/batch": Call(body=lambda: {"screenings": [screening()]}),
    "GET /v1/screenings/{screening_id}/personal": Call(query={"purpose": "care_coordination"}),
    "POST /v1/erasures": Call(make_body=_erasure_body),
    "GET /v1/audit/proofs/consistency": Call(query={"from_size": "1"}),
    "POST /v1/rules/evaluate": Call(body=lambda: {"screening": screening()}),
    "POST /v1/partners": Call(body=partner_body),
    "PATCH /v1/partners/{partner_id}": Call(body=lambda: {"name": "Renamed partner"}),
    "PATCH /v1/partners/me/capacity": Call(make_body=_capacity_body),
    "POST /v1/referrals/{referral_id}/status": Call(body=lambda: {"status": "received"}),
    # Only a dead letter can be replayed: 409 on a pending one shows the call was allowed.
    "POST /v1/deliveries/{delivery_id}/replay": Call(ok=(200, 409)),
}


# --- console routes: a signed-in session instead of a bearer key ------------------------


@dataclass
class ConsoleCall:
    #: The form posted (the session's form token is added).
    form: Callable[[], dict[str, str]] | None = None
    make_form: BodyMaker | None = None
    query: dict[str, str] | None = None
    #: A page answers 200; a form 303 (back to a page).
    ok: tuple[int, ...] = (200, 303)


async def _capacity_form(http: httpx.AsyncClient, api_key: KeyFactory) -> Any:
    return {"partner_id": await _make_partner(http, api_key, OWN_ORG), "available": "1"}


CONSOLE_CALLS: dict[str, ConsoleCall] = {
    "POST /console/referrals/{referral_id}/status": ConsoleCall(
        form=lambda: {"status": "received"}
    ),
    "POST /console/capacity": ConsoleCall(make_form=_capacity_form),
    # A referral's pending body is not a dead notice: 409 shows the call was allowed.
    "POST /console/dead-letters/{delivery_id}/replay": ConsoleCall(ok=(303, 409)),
    # Only a referral that needs a person can be acted on: 409 shows the call was allowed.
    "POST /console/queue/{referral_id}/assign": ConsoleCall(
        form=lambda: {"partner_id": "x", "reason": "partner_agreed"}, ok=(303, 409)
    ),
    "POST /console/queue/{referral_id}/retry": ConsoleCall(ok=(303, 409)),
    "POST /console/queue/{referral_id}/close": ConsoleCall(
        form=lambda: {"reason": "duplicate"}, ok=(303, 409)
    ),
}


async def _console_request(
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    route_key: str,
    key: str | None,
    target: str,
) -> httpx.Response:
    """The route called from a browser: signed in with ``key`` (if any) in a cookie jar of
    its own, forms carrying the session's token."""
    from tests.console.helpers import fresh_client, sign_in

    method = route_key.split(" ", 1)[0]
    call = CONSOLE_CALLS.get(route_key, ConsoleCall())
    async with fresh_client(http) as browser:
        token = await sign_in(browser, key) if key else ""
        if method == "GET":
            return await browser.get(target, params=call.query)
        form = call.form() if call.form else {}
        if call.make_form is not None:
            form = await call.make_form(http, api_key)
        return await browser.request(method, target, data={"csrf_token": token, **form})


def _org_for(role: str, own: bool) -> str | None:
    name = OWN_ORG if own else OTHER_ORG
    if role == "partner":
        return PARTNER_ORG[name]
    return name if role == "clinic" else None


@pytest.mark.parametrize(
    "route_key",
    sorted(
        k for k, v in MATRIX.items() if not isinstance(v, Access) and k not in development_only()
    ),
)
async def test_route_enforces_its_row(
    route_key: str, http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    row = MATRIX[route_key]
    assert isinstance(row, dict)
    method, path = route_key.split(" ", 1)
    call = CALLS.get(route_key, Call())
    params = [p.strip("{}") for p in path.split("/") if p.startswith("{")]

    console = path.startswith("/console")
    if console:
        call = Call(ok=CONSOLE_CALLS.get(route_key, ConsoleCall()).ok)

    async def request(key: str | None, target: str) -> httpx.Response:
        if console:
            return await _console_request(http, api_key, route_key, key, target)
        headers = bearer(key) if key else {}
        if call.make_body is not None:
            body = await call.make_body(http, api_key)
        else:
            body = call.body() if call.body else None
        return await http.request(method, target, json=body, headers=headers, params=call.query)

    def fill(ids: dict[str, str]) -> str:
        target = path
        for name, value in ids.items():
            target = target.replace("{" + name + "}", value)
        return target

    # Objects owned by OWN_ORG, made once for every role.
    own_ids = {p: await OBJECT_MAKERS[p](http, api_key, OWN_ORG) for p in params}
    missing_ids = {p: str(uuid.uuid4()) for p in params}

    anonymous = await request(None, fill(own_ids))
    if console:
        # No session: the page asks to sign in.
        assert anonymous.status_code == 303, f"{route_key} anonymous: {anonymous.status_code}"
        assert anonymous.headers["location"].startswith("/console/sign-in")
    else:
        assert anonymous.status_code == 401, f"{route_key} anonymous: {anonymous.status_code}"

    for role, access in row.items():
        key = await api_key(role, _org_for(role, own=True))
        response = await request(key, fill(own_ids))
        where = f"{route_key} as {role} ({access})"
        if access is Access.deny:
            assert response.status_code == 403, f"{where}: {response.status_code}"
            continue
        assert response.status_code in call.ok, f"{where}: {response.status_code} {response.text}"
        if not params:
            continue
        missing = await request(key, fill(missing_ids))
        assert missing.status_code == 404, f"{where} missing object: {missing.status_code}"
        if access is Access.own:
            other_key = await api_key(role, _org_for(role, own=False))
            other = await request(other_key, fill(own_ids))
            assert other.status_code == 404, f"{where} other's object: {other.status_code}"
