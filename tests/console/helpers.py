"""Signing in to the console from tests, as a browser would (cookies, form tokens)."""

from __future__ import annotations

import re
from typing import Any

import httpx

from app.console import sessions

_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def form_token(page: httpx.Response) -> str:
    """The form token a page carries (every form of a session carries the same one)."""
    found = _TOKEN.search(page.text)
    assert found is not None, "no form on this page"
    return found.group(1)


async def sign_in(http: httpx.AsyncClient, key: str, *, next_: str = "/console") -> str:
    """Sign in with ``key``; return the session's form token. The client keeps the cookie."""
    form = await http.get("/console/sign-in")
    assert form.status_code == 200, form.text
    answer = await http.post(
        "/console/sign-in",
        data={"credential": key, "csrf_token": form_token(form), "next": next_},
    )
    assert answer.status_code == 303, answer.text
    assert sessions.COOKIE in http.cookies
    landing = await http.get(answer.headers["location"])
    return form_token(landing)


async def post_form(
    http: httpx.AsyncClient, path: str, token: str, **fields: Any
) -> httpx.Response:
    return await http.post(path, data={"csrf_token": token, **fields})


def fresh_client(http: httpx.AsyncClient) -> httpx.AsyncClient:
    """Another browser on the same app (its own cookie jar)."""
    return httpx.AsyncClient(transport=http._transport, base_url=str(http.base_url))
