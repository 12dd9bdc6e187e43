"""The OpenAPI document is complete enough for a partner, clinic or auditor developer to act on.

Every operation has a summary and a description; every error response is RFC 9457
problem+json; every JSON request body and every 2xx JSON response carries an example, and
every example validates against its schema. A new route that lacks any of these fails here,
naming the route.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from functools import cache
from typing import Any

import httpx
import jsonschema_rs
from fastapi import FastAPI
from pydantic import BaseModel

from app.main import create_app
from app.settings import Environment, Settings
from tests.conftest import KeyFactory, bearer

ROLES = ("clinic", "partner", "auditor", "admin")

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
MIN_DESCRIPTION = 40


Document = dict[str, Any]


class Bare(BaseModel):
    n: int


def build(extra_routes: bool = False) -> Document:
    # Development mode mounts the demo partner inboxes too: document every route there is.
    settings = Settings(env=Environment.development, database_url="sqlite+aiosqlite://")
    app = create_app(settings)
    if extra_routes:

        @app.post("/v1/bare")
        async def bare(body: Bare) -> Bare:  # pragma: no cover - never called
            return body

        @app.get("/v1/bare/status")
        async def bare_status() -> Bare:  # pragma: no cover - never called
            return Bare(n=1)

    # Round-trip through JSON: what a client downloads from /openapi.json.
    return json.loads(json.dumps(app.openapi()))  # type: ignore[no-any-return]


@cache
def document() -> Document:
    return build()


def operations(doc: Document) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield f"{method.upper()} {path}", item[method]


def resolve(doc: Document, schema: dict[str, Any]) -> dict[str, Any]:
    """Follow a top-level $ref into components."""
    while "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        schema = doc["components"]["schemas"][name]
    return schema


def examples_of(doc: Document, media: dict[str, Any]) -> list[tuple[str, Any]]:
    """(where, example) for every example on a media type or on its (resolved) schema."""
    found: list[tuple[str, Any]] = []
    if "example" in media:
        found.append(("example", media["example"]))
    for name, item in media.get("examples", {}).items():
        if "value" in item:
            found.append((f"examples.{name}", item["value"]))
    schema = resolve(doc, media.get("schema", {}))
    for index, value in enumerate(schema.get("examples", [])):
        found.append((f"schema.examples[{index}]", value))
    if "example" in schema:
        found.append(("schema.example", schema["example"]))
    return found


def validator(doc: Document, schema: dict[str, Any]) -> Any:
    """A validator for ``schema`` whose #/components/... references resolve in ``doc``."""
    root = copy.deepcopy(schema)
    root["components"] = doc["components"]
    return jsonschema_rs.Draft202012Validator(root, validate_formats=True)


def json_bodies(doc: Document) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every JSON request body and every 2xx JSON response, with where it is."""
    for name, operation in operations(doc):
        body = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if body is not None:
            yield f"{name} request body", body
        for status, response in operation["responses"].items():
            media = response.get("content", {}).get("application/json")
            if status.startswith("2") and media is not None:
                yield f"{name} {status} response", media


# --- The checks: each returns what is wrong, naming the route ---------------------------------


def undocumented(doc: Document) -> list[str]:
    return [
        name
        for name, operation in operations(doc)
        if not operation.get("summary", "").strip()
        or len(operation.get("description", "").strip()) < MIN_DESCRIPTION
    ]


def bad_error_responses(doc: Document) -> list[str]:
    wrong: list[str] = []
    problem = validator(doc, {"$ref": "#/components/schemas/Problem"})
    for name, operation in operations(doc):
        errors = {s: r for s, r in operation["responses"].items() if s[0] in "45"}
        if not errors:
            wrong.append(f"{name}: documents no error response")
        for status, response in errors.items():
            content = response.get("content", {})
            media = content.get("application/problem+json", {})
            if list(content) != ["application/problem+json"] or media.get("schema") != {
                "$ref": "#/components/schemas/Problem"
            }:
                wrong.append(f"{name} {status}: {sorted(content)}")
                continue
            example = media.get("example")
            if example is None or example.get("status") != int(status):
                wrong.append(f"{name} {status}: no example with this status")
            elif not problem.is_valid(example):
                wrong.append(f"{name} {status}: the example is not a valid Problem")
    return wrong


def without_examples(doc: Document) -> list[str]:
    return [where for where, media in json_bodies(doc) if not examples_of(doc, media)]


def invalid_examples(doc: Document) -> list[str]:
    invalid: list[str] = []
    for where, media in json_bodies(doc):
        if "schema" not in media:
            invalid.append(f"{where}: no schema")
            continue
        check = validator(doc, media["schema"])
        for label, value in examples_of(doc, media):
            errors = [f"{e.instance_path}: {e.message}" for e in check.iter_errors(value)]
            if errors:
                invalid.append(f"{where} {label}: {errors[:3]}")
    return invalid


# --- The tests --------------------------------------------------------------------------------


def test_the_document_has_operations() -> None:
    names = [name for name, _ in operations(document())]
    assert len(names) > 30
    assert "POST /v1/screenings" in names
    assert "POST /demo/partners/{partner_id}/inbox" in names


def test_every_operation_has_a_summary_and_a_description() -> None:
    missing = undocumented(document())
    assert not missing, (
        "these operations need `summary=` and a `description=` of at least "
        f"{MIN_DESCRIPTION} characters that a caller can act on: {missing}"
    )


def test_every_error_response_is_a_problem_with_an_example() -> None:
    wrong = bad_error_responses(document())
    assert not wrong, "error responses must be problem+json (app.openapi.problem): " + str(wrong)
    assert "HTTPValidationError" not in document()["components"]["schemas"]


def test_every_json_body_and_success_response_has_an_example() -> None:
    missing = without_examples(document())
    assert not missing, (
        "add an example (Body(openapi_examples=...), app.openapi.ok(...), or "
        f"json_schema_extra on the model) to: {missing}"
    )


def test_every_example_validates_against_its_schema() -> None:
    invalid = invalid_examples(document())
    assert not invalid, "examples that do not match their schema:\n" + "\n".join(invalid)
    checked = sum(len(examples_of(document(), media)) for _, media in json_bodies(document()))
    assert checked > 40


def test_a_bare_new_route_fails_every_check() -> None:
    doc = build(extra_routes=True)
    for check in (undocumented, bad_error_responses, without_examples):
        assert any("/v1/bare" in problem for problem in check(doc)), check.__name__
    # And a wrong example is caught: make one of the real ones invalid.
    media = doc["paths"]["/v1/rules"]["get"]["responses"]["200"]["content"]["application/json"]
    media["example"] = {**media["example"], "rules": "twenty-seven"}
    assert any("GET /v1/rules 200" in problem for problem in invalid_examples(doc))
    media["example"] = {k: v for k, v in media["example"].items() if k != "sha256"}
    assert any("sha256" in problem for problem in invalid_examples(doc))


#: Query times every datetime parameter refuses: no offset, a bare date, and times UTC
#: cannot hold (year 0 and year 10000 once the offset is applied).
BAD_QUERY_TIMES = (
    "2026-11-20T00:00:00",
    "2026-11-20",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59.999999-14:00",
)


async def test_every_date_time_query_parameter_refuses_bad_times_with_a_422(
    app: FastAPI, api_key: KeyFactory
) -> None:
    """Walks the live app's document: each ``date-time`` query parameter (they share
    ``app.openapi.IsoDatetime``) answers a 422 naming it, for whichever role may call the
    route, and never a 500."""
    keys = [bearer(await api_key(role, "Caravana de la Vida")) for role in ROLES]
    found = []
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://ruta.test") as http:
        for path, item in app.openapi()["paths"].items():
            for parameter in item.get("get", {}).get("parameters", []):
                if parameter["in"] != "query" or not _is_date_time(parameter["schema"]):
                    continue
                found.append((path, parameter["name"]))
                url = re.sub(r"\{[^}]+\}", "6c0b1f7e-0a53-4b51-9d55-3c3f4c2b8e10", path)
                for value in BAD_QUERY_TIMES:
                    answers = [
                        await http.get(url, params={parameter["name"]: value}, headers=key)
                        for key in keys
                    ]
                    assert {r.status_code for r in answers} <= {401, 403, 404, 422}, (path, value)
                    [refused] = [r for r in answers if r.status_code == 422]
                    assert [e["path"] for e in refused.json()["errors"]] == [
                        f"query.{parameter['name']}"
                    ], (path, value)
    assert ("/v1/referrals", "created_to") in found
    assert ("/v1/audit/events", "until") in found


def _is_date_time(schema: dict[str, Any]) -> bool:
    return schema.get("format") == "date-time" or any(
        _is_date_time(s) for s in schema.get("anyOf", [])
    )


# --- What a generated client needs: names, types, operation ids, tags -------------------------

#: Objects left free-form on purpose, and why (anything else must be typed).
FREE_FORM = {
    # Each item is validated as a screening on its own, so one bad item fails alone.
    "#/components/schemas/BatchIn/properties/screenings/items",
    # A batch item's problem+json body (the Problem schema describes it).
    "#/components/schemas/BatchItemResult/properties/problem/anyOf/0",
    # An audit event's data differs by action (docs/audit.md lists them).
    "#/components/schemas/EventOut/properties/data",
    # The screening values a rule read: any screening field.
    "#/components/schemas/FiredRule/properties/inputs",
    # The demo inbox keeps whatever was delivered (the webhooks describe those bodies).
    "#/components/schemas/InboxItem/properties/payload",
    # Personal fields, by path: only those the screening holds.
    "#/components/schemas/PersonalOut/properties/personal",
    # Matching's explanation: criteria, fallbacks and who was passed over.
    "#/components/schemas/ReferralExplanation/properties/match/anyOf/0",
    # The stored screening without its personal fields (ScreeningIn describes it).
    "#/components/schemas/ScreeningDetail/properties/screening",
    # Withheld referrals and adjusted facts: their keys depend on the rule.
    "#/components/schemas/Trace/properties/suppressed/items",
    "#/components/schemas/Trace/properties/adjustments/additionalProperties",
}


def free_form_objects(node: Any, where: str) -> Iterator[str]:
    if isinstance(node, dict):
        if (
            node.get("type") == "object"
            and "properties" not in node
            and not isinstance(node.get("additionalProperties"), dict)
        ):
            yield where
        for key, value in node.items():
            yield from free_form_objects(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from free_form_objects(value, f"{where}/{index}")


def test_every_component_has_a_unique_meaningful_name() -> None:
    """Generators name classes after components or their titles: two enums both titled
    PartnerStatus, or Hours-Input beside Hours-Output, made openapi-python-client drop the
    partners' status operation."""
    schemas = document()["components"]["schemas"]
    odd = [n for n in schemas if not re.fullmatch(r"[A-Z][A-Za-z0-9]*", n)]
    assert not odd, f"generated or mode-suffixed component names: {odd}"
    titles = [s.get("title", name) for name, s in schemas.items()]
    assert len(titles) == len(set(titles)), sorted(t for t in titles if titles.count(t) > 1)
    assert {"DirectoryStatus", "PartnerStatus"} <= set(schemas)
    assert schemas["DirectoryStatus"]["enum"] == ["active", "paused"]


def test_every_response_is_typed_where_a_client_would_get_a_dict() -> None:
    doc = document()
    found = set(free_form_objects(doc["components"], "#/components"))
    found |= set(free_form_objects(doc["paths"], "#/paths"))
    assert found - FREE_FORM == set(), "type these (or explain them in FREE_FORM)"
    schemas = doc["components"]["schemas"]
    for model in ("ScreeningReceipt", "ScreeningDetail"):
        decision = schemas[model]["properties"]["decision"]["anyOf"][0]
        assert decision == {"$ref": "#/components/schemas/DecisionView"}
    assert resolve(doc, {"$ref": "#/components/schemas/DecisionView"})["properties"]["trace"] == {
        "$ref": "#/components/schemas/Trace",
        "description": "Every rule that fired and the values it read.",
    }
    details = doc["paths"]["/v1/referrals/{referral_id}/details"]["get"]["responses"]["200"]
    assert details["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ReferralDetails"
    }
    assert details["content"]["application/fhir+json"]["schema"] == {
        "$ref": "#/components/schemas/FhirBundle"
    }
    for name in ("Eligibility", "OpeningHours", "ServiceArea", "Hours"):
        assert schemas[name]["properties"], name


def test_every_operation_has_a_stable_readable_id() -> None:
    from app.openapi import OPERATION_IDS

    doc = document()
    found = {
        f"{method.upper()} {path}": operation["operationId"]
        for section in ("paths", "webhooks")
        for path, item in doc[section].items()
        for method, operation in item.items()
    }
    missing = sorted(set(found) - set(OPERATION_IDS))
    assert not missing, f"add these to app.openapi.OPERATION_IDS: {missing}"
    assert {k: found[k] for k in found} == {k: OPERATION_IDS[k] for k in found}
    ids = list(OPERATION_IDS.values())
    assert len(ids) == len(set(ids)), "operation ids must be unique"
    assert all(re.fullmatch(r"[a-z][A-Za-z]+", i) for i in ids)
    assert found["POST /v1/screenings"] == "submitScreening"
    assert found["POST /v1/referrals/{referral_id}/status"] == "reportReferralStatus"


def test_every_tag_is_described() -> None:
    doc = document()
    described = {t["name"]: t.get("description", "") for t in doc.get("tags", [])}
    used = {
        tag
        for section in ("paths", "webhooks")
        for item in doc[section].values()
        for operation in item.values()
        for tag in operation.get("tags", [])
    }
    assert used, "no tags"
    assert {t for t in used if len(described.get(t, "")) < MIN_DESCRIPTION} == set()


# --- /docs and /redoc offline -----------------------------------------------------------------


async def test_the_docs_pages_load_only_local_assets_and_they_are_served(
    http: httpx.AsyncClient,
) -> None:
    """Offline (a clinic in a mining camp, a partner behind a firewall) the pages still
    render: every script, style sheet, image and document they load is on this server."""
    for page in ("/docs", "/redoc"):
        answer = await http.get(page)
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/html")
        html = answer.text
        urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", html)
        urls += re.findall(r"""(?:\burl\b|redoc_url)\s*\(\s*['"]([^'"]+)['"]""", html)
        assert urls, page
        remote = [u for u in urls if not u.startswith("/")]
        assert not remote, (page, remote)
        assert "cdn" not in html.lower()
        assert "fonts.googleapis" not in html
        for url in urls:
            asset = await http.get(url)
            assert asset.status_code == 200, url
            assert len(asset.content) > 100, url
    swagger = (await http.get("/docs")).text
    assert '"validatorUrl": null' in swagger  # no badge fetched from swagger.io
    assert "/docs/assets/swagger-ui-bundle.js" in swagger
    assert "/docs/assets/redoc.standalone.js" in (await http.get("/redoc")).text
    assert (await http.get("/docs/oauth2-redirect")).status_code == 200
