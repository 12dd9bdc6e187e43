"""The reports page: charts drawn on the server from the suppressed figures, each beside
its table. On both engines."""

from __future__ import annotations

import base64
import re

import httpx
from fastapi import FastAPI

from tests.conftest import KeyFactory
from tests.console.helpers import sign_in
from tests.delivery.conftest import submit


async def test_charts_are_svg_images_beside_their_tables(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    app.state.settings = app.state.settings.model_copy(update={"report_min_people": 2})
    for n in range(3):
        await submit(http, api_key, subject__case_code=f"MDD-2026-{n:04d}")
    await sign_in(http, await api_key("auditor"))
    page = await http.get("/console/reports")
    assert page.status_code == 200
    images = re.findall(r'<img src="data:image/svg\+xml;base64,([^"]+)" alt="([^"]+)"', page.text)
    assert len(images) == 3  # no acknowledgement yet: that report is empty
    svg = base64.b64decode(images[0][0]).decode()
    assert svg.lstrip().startswith("<?xml")
    assert "<svg" in svg
    assert "<script" not in svg
    assert "Derivaciones" in svg  # its labels are text, in the page's language
    assert page.text.count("<table") == 3
    # Nothing about fewer than k people: at k=11 the figures are suppressed everywhere.
    app.state.settings = app.state.settings.model_copy(update={"report_min_people": 11})
    suppressed = await http.get("/console/reports")
    assert "suprimida" in suppressed.text


async def test_admins_see_reports_partners_do_not(
    http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    await sign_in(http, await api_key("admin"))
    assert (await http.get("/console/reports")).status_code == 200
    async with httpx.AsyncClient(transport=http._transport, base_url=str(http.base_url)) as other:
        await sign_in(other, await api_key("partner", "org-a"))
        assert (await other.get("/console/reports")).status_code == 403
