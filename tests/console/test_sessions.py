"""Console sessions: sign-in with a key, the cookie's attributes, form tokens, the idle
timeout, sign-out, revocation, and what the audit trail records. On both engines."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from app.auth import parse_key_id
from app.console import sessions
from app.models import ApiClient, ConsoleSession
from app.models.audit import AuditEvent
from app.models.base import utcnow
from app.settings import Environment, Settings
from tests.conftest import KeyFactory
from tests.console.helpers import form_token, fresh_client, post_form, sign_in
from tests.test_auth import _token


async def _events(app: FastAPI, prefix: str) -> list[AuditEvent]:
    async with app.state.sessionmaker() as session:
        rows = (await session.execute(select(AuditEvent).order_by(AuditEvent.seq))).scalars()
        return [e for e in rows if e.action.startswith(prefix)]


async def test_sign_in_sets_a_strict_http_only_cookie_and_is_audited(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    key = await api_key("auditor")
    form = await http.get("/console/sign-in")
    assert 'type="password"' in form.text
    answer = await http.post(
        "/console/sign-in", data={"credential": key, "csrf_token": form_token(form)}
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/log"
    cookie = next(
        c for c in answer.headers.get_list("set-cookie") if c.startswith(sessions.COOKIE + "=")
    )
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "samesite", "path"} <= attributes
    assert "samesite=strict" in cookie.lower()
    assert "secure" not in attributes  # tests serve plain HTTP; production sets Secure
    token = cookie.split(";")[0].split("=", 1)[1]
    async with app.state.sessionmaker() as session:
        [row] = (await session.execute(select(ConsoleSession))).scalars()
    # Only the keyed hash of the cookie's token is stored, never the token or the key.
    assert row.id == sessions.token_hash(app.state.settings, token) != token
    assert key not in str(row.__dict__)
    [event] = await _events(app, "console.")
    assert event.action == "console.signed_in"
    assert event.data["role"] == "auditor"
    assert event.data["via"] == "key"
    assert key not in str(event.data)


def test_the_cookie_is_secure_in_production() -> None:
    production = Settings(
        env=Environment.production,
        secret_key="x" * 40,  # type: ignore[arg-type]
        encryption_kek="A" * 43 + "=",  # type: ignore[arg-type]
        audit_signing_key="A" * 43 + "=",  # type: ignore[arg-type]
    )
    assert production.console_cookie_secure
    assert not Settings(env=Environment.development).console_cookie_secure


async def test_a_wrong_key_is_refused_recorded_and_never_stored(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    real = await api_key("partner", "org-a")
    wrong = real[:-4] + ("aaaa" if not real.endswith("aaaa") else "bbbb")
    form = await http.get("/console/sign-in")
    answer = await http.post(
        "/console/sign-in", data={"credential": wrong, "csrf_token": form_token(form)}
    )
    assert answer.status_code == 303
    assert "failed=true" in answer.headers["location"]
    assert sessions.COOKIE not in http.cookies
    failed = await http.get(answer.headers["location"])
    assert failed.status_code == 401
    [event] = await _events(app, "console.")
    assert event.action == "console.sign_in_failed"
    assert event.actor_type == "anonymous"
    # The key id of a key Ruta issued is kept; the secret never is.
    assert event.data["key_id"] == parse_key_id(real)
    assert wrong not in str(event.data)


async def test_the_sign_in_form_needs_its_own_token(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    key = await api_key("auditor")
    answer = await http.post("/console/sign-in", data={"credential": key, "csrf_token": "x"})
    assert answer.status_code == 403
    assert sessions.COOKIE not in http.cookies


async def test_a_form_without_the_session_token_is_refused_and_recorded(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    token = await sign_in(http, await api_key("partner", "org-a"))
    forged = await http.post("/console/sign-out", data={})
    assert forged.status_code == 403
    other = await http.post("/console/sign-out", data={"csrf_token": token + "x"})
    assert other.status_code == 403
    denied = await _events(app, "request.denied")
    assert [e.data["reason"] for e in denied] == ["csrf_failed", "csrf_failed"]
    # Still signed in: the forged posts did nothing.
    assert (await http.get("/console/inbox")).status_code == 200


async def test_sign_out_ends_the_session(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    token = await sign_in(http, await api_key("partner", "org-a"))
    cookie = http.cookies[sessions.COOKIE]
    answer = await post_form(http, "/console/sign-out", token)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/sign-in"
    # The old cookie, replayed, opens nothing.
    async with fresh_client(http) as replay:
        replay.cookies.set(sessions.COOKIE, cookie, path="/console")
        again = await replay.get("/console/inbox")
    assert again.status_code == 303
    assert again.headers["location"].startswith("/console/sign-in")
    actions = [e.action for e in await _events(app, "console.")]
    assert actions == ["console.signed_in", "console.signed_out"]
    async with app.state.sessionmaker() as session:
        assert list((await session.execute(select(ConsoleSession))).scalars()) == []


async def test_an_idle_session_ends(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    await sign_in(http, await api_key("partner", "org-a"))
    idle = timedelta(minutes=app.state.settings.console_idle_minutes)
    async with app.state.sessionmaker() as session:
        await session.execute(
            update(ConsoleSession).values(last_seen_at=utcnow() - idle - timedelta(seconds=1))
        )
        await session.commit()
    answer = await http.get("/console/inbox")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/sign-in?next=/console/inbox"


@pytest.mark.parametrize("how", ["revoked", "rotated"])
async def test_a_session_ends_with_its_key(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory, how: str
) -> None:
    await sign_in(http, await api_key("partner", "org-a"))
    assert (await http.get("/console/inbox")).status_code == 200
    async with app.state.sessionmaker() as session:
        change = {"revoked_at": utcnow()} if how == "revoked" else {"key_id": "rotatedawayx"}
        await session.execute(update(ApiClient).values(**change))
        await session.commit()
    assert (await http.get("/console/inbox")).status_code == 303


async def test_a_page_without_a_session_asks_to_sign_in(http: httpx.AsyncClient) -> None:
    answer = await http.get("/console/inbox")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/sign-in?next=/console/inbox"
    home = await http.get("/console")
    assert home.headers["location"] == "/console/sign-in"


async def test_after_sign_in_the_page_asked_for_opens(
    http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    form = await http.get("/console/sign-in?next=/console/audit")
    answer = await http.post(
        "/console/sign-in",
        data={
            "credential": await api_key("auditor"),
            "csrf_token": form_token(form),
            "next": "https://elsewhere.example/",
        },
    )
    # Never a redirect off the site: an outside target falls back to the role's home.
    assert answer.headers["location"] == "/console/log"


async def test_spanish_by_default_english_by_header_or_switch(http: httpx.AsyncClient) -> None:
    spanish = await http.get("/console/sign-in")
    assert 'lang="es"' in spanish.text
    assert "Iniciar sesión" in spanish.text
    english = await http.get("/console/sign-in", headers={"Accept-Language": "en-GB,en;q=0.9"})
    assert 'lang="en"' in english.text
    assert "Sign in" in english.text
    switched = await http.get("/console/language?lang=en&next=/console/sign-in")
    assert switched.status_code == 303
    again = await http.get("/console/sign-in")
    assert 'lang="en"' in again.text
    offsite = await http.get("/console/language?lang=es&next=//evil.example/")
    assert offsite.headers["location"] == "/console"


async def test_a_jwt_signs_in_until_the_token_expires(
    jwt_http: httpx.AsyncClient, rsa_keys: tuple[Any, Any]
) -> None:
    expires = int(time.time()) + 120
    token = _token(rsa_keys[0], scope="ruta:partner", org="org-jwt", exp=expires)
    await sign_in(jwt_http, token)
    assert (await jwt_http.get("/console/inbox")).status_code == 200
    app = jwt_http._transport.app  # type: ignore[attr-defined]
    async with app.state.sessionmaker() as session:
        [row] = (await session.execute(select(ConsoleSession))).scalars()
    # A JWT session never outlives its token, and keeps the token's claims, not the token.
    assert row.via == "jwt"
    assert (row.role, row.organisation) == ("partner", "org-jwt")
    assert row.expires_at.timestamp() <= expires
    assert token not in str(row.__dict__)
    async with fresh_client(jwt_http) as other:
        form = await other.get("/console/sign-in")
        forged = _token(rsa_keys[0], scope="ruta:partner", org="org-jwt", iss="https://evil")
        answer = await other.post(
            "/console/sign-in", data={"credential": forged, "csrf_token": form_token(form)}
        )
        assert "failed=true" in answer.headers["location"]
