from __future__ import annotations

import json

import httpx
import pytest

from app.i18n import LOCALES_DIR, available_locales, negotiate
from tests.conftest import KeyFactory, bearer
from tests.factories import screening


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, "en"),
        ("", "en"),
        ("es", "es"),
        ("es-PE", "es"),
        ("es-PE,es;q=0.9,en;q=0.8", "es"),
        ("en-GB,es;q=0.5", "en"),
        ("qu-PE,es;q=0.8", "es"),  # Quechua has no catalogue yet: the next best
        ("fr", "en"),
        ("es;q=0", "en"),
        ("*", "en"),
        ("en;q=0.2, es;q=0.9", "es"),
        ("garbage;;q=abc", "en"),
    ],
)
def test_negotiate(header: str | None, expected: str) -> None:
    assert negotiate(header) == expected


def test_every_catalogue_has_the_same_codes_and_spanish_covers_every_title() -> None:
    from app import errors

    es = json.loads((LOCALES_DIR / "es.json").read_text())
    titles = {
        cls.title
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.RutaError)
    }
    assert titles <= set(es["messages"]), titles - set(es["messages"])
    assert set(available_locales()) >= {"en", "es"}


async def test_problem_details_follow_accept_language(
    http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    response = await http.post(
        "/v1/screenings", json=screening(), headers={"Accept-Language": "es-PE"}
    )
    assert response.status_code == 401
    assert response.json()["title"] == "Se requiere autenticación"
    assert response.headers["content-language"] == "es"
    key = await api_key("clinic", "Caravana de la Vida")
    body = screening(subject__region="Atlantis")
    body["subject"]["nmae"] = "x"
    response = await http.post(
        "/v1/screenings", json=body, headers={**bearer(key), "Accept-Language": "es"}
    )
    assert response.status_code == 422
    messages = {e["path"]: e["message"] for e in response.json()["errors"]}
    assert messages["subject.nmae"].startswith("Campo desconocido")
    assert messages["subject.region"].startswith("no es una región del Perú")
    english = await http.post("/v1/screenings", json=body, headers=bearer(key))
    assert english.json()["title"] == "The request is not valid"
    assert english.headers["content-language"] == "en"


async def test_413_is_localised(http: httpx.AsyncClient, api_key: KeyFactory) -> None:
    key = await api_key("clinic", "Caravana de la Vida")
    response = await http.post(
        "/v1/screenings",
        content=b"{" + b" " * (3 * 1024 * 1024) + b"}",
        headers={**bearer(key), "content-type": "application/json", "Accept-Language": "es"},
    )
    assert response.status_code == 413
    assert response.json()["title"] == "Cuerpo de la solicitud demasiado grande"


def test_a_default_other_than_english_for_callers_that_ask() -> None:
    from app.i18n import negotiate

    assert negotiate(None, "es") == "es"
    assert negotiate("de-DE, fr;q=0.8", "es") == "es"
    assert negotiate("en-GB, es;q=0.5", "es") == "en"
    assert negotiate("de-DE") == "en"  # the API's default is unchanged


def test_catalogues_merge_the_parts_of_a_locale() -> None:
    from app.i18n import catalogue, translate

    # es.json's own messages, and es/console.json's, in one catalogue.
    assert translate("es", "Not found") == "No encontrado"
    assert translate("es", "Sign out") == "Cerrar sesión"
    assert "code:revoked" in catalogue("en")["messages"]
