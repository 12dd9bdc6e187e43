"""The console in a real browser: a partner accepting a referral from its inbox, a
coordinator assigning one that needs a person, an auditor opening an explanation and the
charts; a form without its token refused; another organisation's referral not found by
editing the URL; and axe-core finding no serious or critical accessibility violation on
each page."""

from __future__ import annotations

import os
from functools import cache
from typing import Any

import pytest

from tests.browser.conftest import AXE, Live
from tests.factories import adult_consenting

pytestmark = pytest.mark.browser


@cache
def _axe_source() -> str:
    return AXE.read_text(encoding="utf-8")


def assert_accessible(browser: Any) -> None:
    """axe-core's WCAG 2 A/AA rules on the page as it is: no serious or critical violation."""
    browser.set_script_timeout(30)
    browser.execute_script(_axe_source())
    violations = browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        axe.run(document, {runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21aa"]}})
          .then(result => done(result.violations.map(v => ({
              id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target.join(" "))}))))
          .catch(error => done([{id: "axe-error", impact: "critical", nodes: [String(error)]}]));
        """
    )
    shots = os.environ.get("RUTA_TEST_SCREENSHOTS")
    if shots:  # to look at the pages: a PNG of each one checked
        name = browser.current_url.split("/console", 1)[-1].strip("/").replace("/", "_")
        browser.save_screenshot(f"{shots}/{len(os.listdir(shots)):02d}-{name[:60] or 'home'}.png")
    bad = [v for v in violations if v["impact"] in ("serious", "critical")]
    assert not bad, f"{browser.current_url}: {bad}"


def sign_in(browser: Any, live: Live, who: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(live.url + "/console/sign-in")
    assert_accessible(browser)
    browser.find_element(By.ID, "credential").send_keys(live.keys[who])
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait_for(browser, lambda b: "/sign-in" not in b.current_url)


def wait_for(browser: Any, condition: Any) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 15, poll_frequency=0.1).until(condition)


def text(browser: Any) -> str:
    from selenium.webdriver.common.by import By

    return str(browser.find_element(By.TAG_NAME, "main").text)


@pytest.fixture(scope="module")
def referrals(live: Live) -> dict[str, str]:
    """Partners and a screening: the medical referral with the console-only partner, the
    legal one held (the only legal partner is out of the person's area)."""
    admin = {"Authorization": f"Bearer {live.keys['admin']}"}
    clinic = {"Authorization": f"Bearer {live.keys['clinic']}"}
    base = {
        "languages": ["es", "qu"],
        "capacity": {"available": 50, "maximum": 50},
    }
    partners = [
        {
            "id": "cem-browser",
            "organisation": {"id": "cem-browser", "name": "CEM (prueba)"},
            "name": "CEM de prueba",
            "role": "health_facility",
            "services": ["medical"],
            "service_area": {"national": True},
        },
        {
            "id": "defensa-lima",
            "organisation": {"id": "defensa-lima", "name": "Defensa (prueba)"},
            "name": "Defensa Pública Lima (prueba)",
            "role": "legal_aid",
            "services": ["legal"],
            "service_area": {"regions": ["Lima"]},
        },
    ]
    with live.api() as api:
        for partner in partners:
            created = api.post("/v1/partners", json={**base, **partner}, headers=admin)
            assert created.status_code == 201, created.text
        receipt = api.post("/v1/screenings", json=adult_consenting(), headers=clinic)
        assert receipt.status_code == 201, receipt.text
    found = {r["service"]: r for r in receipt.json()["decision"]["referrals"]}
    assert found["medical"]["partner"]["id"] == "cem-browser"
    assert found["legal"]["status"] == "held"
    return {service: r["id"] for service, r in found.items()}


def test_a_partner_accepts_a_referral_from_the_inbox(
    browser: Any, live: Live, referrals: dict[str, str]
) -> None:
    from selenium.webdriver.common.by import By

    sign_in(browser, live, "partner")
    assert browser.current_url.endswith("/console/inbox")
    assert "Derivaciones pendientes" in text(browser)
    assert_accessible(browser)
    browser.find_element(
        By.CSS_SELECTOR, f'a[href="/console/referrals/{referrals["medical"]}"]'
    ).click()
    wait_for(browser, lambda b: referrals["medical"] in b.current_url)
    assert "Por qué esta derivación" in text(browser)
    assert_accessible(browser)
    browser.find_element(By.XPATH, "//button[normalize-space()='Aceptar']").click()
    wait_for(browser, lambda b: "done=accepted" in b.current_url)
    assert "Hecho: aceptada" in text(browser)
    assert "Estado\naceptada" in text(browser)
    browser.get(live.url + "/console/capacity")
    assert_accessible(browser)


def test_a_form_without_its_token_is_refused(
    browser: Any, live: Live, referrals: dict[str, str]
) -> None:
    from selenium.webdriver.common.by import By

    sign_in(browser, live, "partner")
    browser.get(live.url + f"/console/referrals/{referrals['medical']}")
    # Strip the token from the "start" form, as a forged form would lack it.
    browser.execute_script(
        "document.querySelectorAll('input[name=csrf_token]').forEach(e => e.remove());"
    )
    browser.find_element(By.XPATH, "//button[normalize-space()='Iniciar atención']").click()
    wait_for(browser, lambda b: "/status" in b.current_url)
    assert "El formulario venció o no proviene de esta consola." in text(browser)
    browser.get(live.url + f"/console/referrals/{referrals['medical']}")
    assert "Estado\naceptada" in text(browser)  # nothing changed


def test_another_organisation_cannot_open_it_by_editing_the_url(
    browser: Any, live: Live, referrals: dict[str, str]
) -> None:
    sign_in(browser, live, "other_partner")
    browser.get(live.url + f"/console/referrals/{referrals['medical']}")
    assert "No encontrado" in text(browser)
    assert "Por qué esta derivación" not in text(browser)
    assert_accessible(browser)


def test_a_coordinator_assigns_a_referral_that_needs_a_person(
    browser: Any, live: Live, referrals: dict[str, str]
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    sign_in(browser, live, "admin")
    assert browser.current_url.endswith("/console/queue")
    assert_accessible(browser)
    browser.find_element(By.CSS_SELECTOR, f'a[href="/console/queue/{referrals["legal"]}"]').click()
    wait_for(browser, lambda b: referrals["legal"] in b.current_url)
    assert "Por qué requiere una persona" in text(browser)
    assert_accessible(browser)
    Select(browser.find_element(By.ID, "partner_id")).select_by_value("defensa-lima")
    Select(browser.find_element(By.ID, "assign-reason")).select_by_value("partner_agreed")
    browser.find_element(By.XPATH, "//button[normalize-space()='Asignar']").click()
    wait_for(browser, lambda b: "done=assigned" in b.current_url)
    page = text(browser)
    assert "Hecho: asignada" in page
    assert "Defensa Pública Lima (prueba)" in page
    assert "Esta derivación no requiere una persona ahora." in page


def test_an_auditor_opens_an_explanation_and_the_charts(
    browser: Any, live: Live, referrals: dict[str, str]
) -> None:
    from selenium.webdriver.common.by import By

    sign_in(browser, live, "auditor")
    assert browser.current_url.endswith("/console/log")
    assert_accessible(browser)
    browser.find_element(By.CSS_SELECTOR, f'a[href="/console/log/{referrals["medical"]}"]').click()
    wait_for(browser, lambda b: referrals["medical"] in b.current_url)
    page = text(browser)
    assert "Reglas que se activaron y los valores que leyeron" in page
    assert "CEM de prueba" in page or "cem-browser" in page
    assert "Intentos de entrega" in page
    assert_accessible(browser)
    browser.get(live.url + "/console/reports")
    images = browser.find_elements(By.CSS_SELECTOR, "figure img")
    assert images
    assert all(img.get_attribute("alt") for img in images)
    # Each image is an SVG the browser drew (non-zero size).
    assert all(int(img.get_property("naturalWidth")) > 0 for img in images)
    assert "Derivaciones por semana, por servicio y urgencia" in text(browser)
    assert_accessible(browser)
    browser.get(live.url + "/console/audit/verify")
    assert "la cadena está íntegra" in text(browser)
    assert_accessible(browser)


def test_english_by_the_switch(browser: Any, live: Live) -> None:
    from selenium.webdriver.common.by import By

    sign_in(browser, live, "auditor")
    browser.find_element(By.LINK_TEXT, "English").click()
    wait_for(browser, lambda b: "Referral log" in text(b))
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"
    assert_accessible(browser)


def test_usable_on_a_phone(browser: Any, live: Live, referrals: dict[str, str]) -> None:
    sign_in(browser, live, "partner")
    browser.set_window_size(390, 844)
    try:
        browser.get(live.url + "/console/inbox")
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= 390  # nothing wider than the screen: no sideways scrolling
        assert_accessible(browser)
    finally:
        browser.set_window_size(1280, 1000)
