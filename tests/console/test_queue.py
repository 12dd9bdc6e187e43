"""The coordinator's console (admins): the queue of referrals that need a person, and
assign, retry and close, each through app/referrals/coordination.py and audited. On both
engines."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select, update

from app import audit
from app.models import Delivery, Referral, ReferralEvent
from app.models.audit import AuditEvent
from app.models.base import utcnow
from app.referrals.routing import mark_undeliverable
from tests.conftest import KeyFactory, bearer
from tests.console.helpers import post_form, sign_in
from tests.delivery.conftest import add_partner, referral, submit
from tests.delivery.partner_server import PartnerServer


def _by_service(receipt: dict[str, Any], service: str) -> str:
    return str(next(r["id"] for r in receipt["decision"]["referrals"] if r["service"] == service))


async def _events(app: FastAPI, action: str) -> list[AuditEvent]:
    async with app.state.sessionmaker() as session:
        query = select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)
        return list((await session.execute(query)).scalars())


async def _held(http: httpx.AsyncClient, api_key: KeyFactory) -> str:
    """A medical referral with no medical partner in the directory: held for a person."""
    receipt = await submit(http, api_key)
    return _by_service(receipt, "medical")


async def test_the_queue_lists_why_and_for_how_long(
    http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    referral_id = await _held(http, api_key)
    await sign_in(http, await api_key("admin"))
    page = await http.get("/console/queue")
    assert page.status_code == 200
    assert f"/console/queue/{referral_id}" in page.text
    assert "ninguna organización ofrece el servicio" in page.text
    case = await http.get(f"/console/queue/{referral_id}")
    assert case.status_code == 200
    assert 'action="/console/queue/' in case.text


async def test_assign_to_a_chosen_partner_out_of_its_area_is_recorded(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory, partner_server: PartnerServer
) -> None:
    referral_id = await _held(http, api_key)
    # A hospital in Lima: out of the person's area (Madre de Dios), so matching passes it by.
    await add_partner(
        http,
        api_key,
        "hospital-lima",
        partner_server.url,
        role="health_facility",
        services=["medical"],
        service_area={"regions": ["Lima"]},
    )
    token = await sign_in(http, await api_key("admin"))
    answer = await post_form(
        http,
        f"/console/queue/{referral_id}/assign",
        token,
        partner_id="hospital-lima",
        reason="partner_agreed",
    )
    assert answer.status_code == 303, answer.text
    row = await referral(app, referral_id)
    assert (row.partner_id, row.status, row.needs_human) == ("hospital-lima", "queued", False)
    assert row.match["chosen_because"][:2] == ["coordinator_assigned", "reason_partner_agreed"]
    [event] = await _events(app, "referral.assigned")
    assert event.actor_role == "admin"
    assert event.data["next_partner_id"] == "hospital-lima"
    assert event.data["overrides"] == ["out_of_area"]
    assert event.data["previous_status"] == "held"
    async with app.state.sessionmaker() as session:
        steps = list(
            (
                await session.execute(
                    select(ReferralEvent).where(ReferralEvent.referral_id == row.id)
                )
            ).scalars()
        )
    assert steps[-1].to_status == "queued"
    assert steps[-1].actor_role == "admin"


async def test_the_protocol_holds_for_a_coordinator(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory, partner_server: PartnerServer
) -> None:
    """A child's protection referral goes to the child-protection authority: a coordinator
    can give it neither to the police nor to a shelter instead."""
    receipt = await submit(
        http, api_key, subject__age=15, consent__scopes=["medical", "protection"]
    )
    referral_id = next(
        r["id"]
        for r in receipt["decision"]["referrals"]
        if r["recipient"] == "child_protection_authority"
    )
    await add_partner(
        http,
        api_key,
        "policia",
        partner_server.url,
        role="law_enforcement",
        services=["protection", "legal"],
    )
    await add_partner(
        http, api_key, "albergue", partner_server.url, role="shelter", services=["protection"]
    )
    token = await sign_in(http, await api_key("admin"))
    path = f"/console/queue/{referral_id}/assign"
    police = await post_form(http, path, token, partner_id="policia", reason="partner_agreed")
    assert police.status_code == 422
    shelter = await post_form(http, path, token, partner_id="albergue", reason="partner_agreed")
    assert shelter.status_code == 422
    row = await referral(app, referral_id)
    assert (row.partner_id, row.status) == (None, "held")
    assert await _events(app, "referral.assigned") == []
    # Only partners the protocol allows are offered.
    case = await http.get(f"/console/queue/{referral_id}")
    assert 'value="policia"' not in case.text
    assert 'value="albergue"' not in case.text


async def test_retry_finds_a_partner_added_since(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory, partner_server: PartnerServer
) -> None:
    referral_id = await _held(http, api_key)
    token = await sign_in(http, await api_key("admin"))
    nothing = await post_form(http, f"/console/queue/{referral_id}/retry", token)
    assert nothing.headers["location"].endswith("done=no_partner")
    await add_partner(http, api_key, "hospital-mdd", partner_server.url, services=["medical"])
    found = await post_form(http, f"/console/queue/{referral_id}/retry", token)
    assert found.headers["location"].endswith("done=matched")
    assert (await referral(app, referral_id)).partner_id == "hospital-mdd"
    outcomes = [e.data["outcome"] for e in await _events(app, "referral.retried")]
    assert outcomes == ["no_partner", "matched"]


async def test_close_with_a_reason(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    referral_id = await _held(http, api_key)
    token = await sign_in(http, await api_key("admin"))
    answer = await post_form(
        http, f"/console/queue/{referral_id}/close", token, reason="resolved_outside_ruta"
    )
    assert answer.status_code == 303
    row = await referral(app, referral_id)
    assert (row.status, row.needs_human) == ("cancelled", False)
    [event] = await _events(app, "referral.closed")
    assert event.data == {"reason": "resolved_outside_ruta", "previous_status": "held"}
    # Nothing more to do on it.
    again = await post_form(http, f"/console/queue/{referral_id}/retry", token)
    assert again.status_code == 409


async def test_an_unknown_reason_is_refused(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    referral_id = await _held(http, api_key)
    token = await sign_in(http, await api_key("admin"))
    answer = await post_form(http, f"/console/queue/{referral_id}/close", token, reason="bored")
    assert answer.status_code == 400
    assert (await referral(app, referral_id)).status == "held"


async def test_the_api_explanation_shows_the_coordinators_steps(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory
) -> None:
    referral_id = await _held(http, api_key)
    token = await sign_in(http, await api_key("admin"))
    await post_form(http, f"/console/queue/{referral_id}/close", token, reason="duplicate")
    explained = await http.get(
        f"/v1/referrals/{referral_id}", headers=bearer(await api_key("auditor"))
    )
    history = explained.json()["history"]
    assert history[-1]["to"] == "cancelled"
    assert history[-1]["reason"] == "coordinator_duplicate"
    assert history[-1]["actor_role"] == "admin"


async def test_retry_sends_a_dead_letter_again_and_close_ends_one_without_a_partner_acting(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory, partner_server: PartnerServer
) -> None:
    await add_partner(http, api_key, "hospital-mdd", partner_server.url, services=["medical"])
    referral_id = _by_service(await submit(http, api_key), "medical")
    # The delivery worker gave up on it (as app/delivery/worker.py does after retries).
    async with app.state.sessionmaker() as session:
        row = await session.get(Referral, uuid.UUID(referral_id))
        assert row is not None
        await mark_undeliverable(session, row, reason="dead_letter", now=utcnow())
        await session.execute(
            update(Delivery).where(Delivery.referral_id == row.id).values(status="dead")
        )
        audit.attach(session, app.state.settings)
        await session.commit()
    token = await sign_in(http, await api_key("admin"))
    answer = await post_form(http, f"/console/queue/{referral_id}/retry", token)
    assert answer.headers["location"].endswith("done=replayed")
    row = await referral(app, referral_id)
    assert (row.status, row.needs_human) == ("queued", False)
    [replayed] = await _events(app, "admin.dead_letter_replayed")
    assert replayed.actor_role == "admin"


async def test_an_emergency_with_a_closed_partner_cannot_be_closed(
    app: FastAPI, http: httpx.AsyncClient, api_key: KeyFactory, partner_server: PartnerServer
) -> None:
    """Its partner may already be acting on it: assign it elsewhere or retry instead."""
    never_open = {"schedule": [{"days": ["sun"], "opens": "00:00", "closes": "00:01"}]}
    await add_partner(
        http,
        api_key,
        "closed-shelter",
        partner_server.url,
        services=["protection"],
        hours=never_open,
    )
    receipt = await submit(http, api_key, safety__trafficker_nearby=True)
    referral_id = _by_service(receipt, "protection")
    row = await referral(app, referral_id)
    assert (row.partner_id, row.human_reason) == ("closed-shelter", "emergency_no_partner_open")
    token = await sign_in(http, await api_key("admin"))
    refused = await post_form(
        http, f"/console/queue/{referral_id}/close", token, reason="duplicate"
    )
    assert refused.status_code == 409
    assert (await referral(app, referral_id)).status == "queued"
