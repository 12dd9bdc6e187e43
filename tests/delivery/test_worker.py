"""The delivery worker against real partner servers on loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import httpx
from fastapi import FastAPI
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app.delivery import policy
from app.delivery.worker import FAILURES_TO_OPEN, DeliveryWorker
from app.models import DeliveryAttempt, PartnerCircuit, PartnerRow
from app.models.audit import AuditEvent
from tests.conftest import KeyFactory, bearer
from tests.delivery.conftest import (
    Clock,
    add_partner,
    deliveries,
    past_the_probe,
    referral,
    submit,
    until_dead,
)
from tests.delivery.partner_server import SECRET, PartnerServer, closed_port_url


async def test_delivered_requests_are_signed_and_verify(
    app: FastAPI,
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    partner_server: PartnerServer,
    worker: DeliveryWorker,
) -> None:
    await add_partner(http, api_key, "hospital-a", partner_server.url)
    receipt = await submit(http, api_key)
    assert await worker.run_once() >= 1
    sent = await deliveries(app)
    assert sent
    assert {d.status for d in sent} == {"delivered"}
    assert len(partner_server.received) == len(sent)
    assert all(r.verified for r in partner_server.received)
    for received in partner_server.received:
        Webhook(SECRET).verify(received.body, received.headers)
        tampered = bytearray(received.body)
        tampered[len(tampered) // 2] ^= 0x01
        try:
            Webhook(SECRET).verify(bytes(tampered), received.headers)
        except WebhookVerificationError:
            pass
        else:  # pragma: no cover - the assertion this test exists for
            raise AssertionError("a one-byte change verified")
    for item in receipt["decision"]["referrals"]:
        assert (await referral(app, item["id"])).status == "delivered"
    async with app.state.sessionmaker() as session:
        events = list((await session.execute(select(AuditEvent))).scalars())
    forwarded = [e for e in events if e.action == "referral.forwarded"]
    assert sorted(e.data["delivery_id"] for e in forwarded) == sorted(str(d.id) for d in sent)
    # Each first attempt that delivered is in its forwarded event, not an event of its own.
    assert [(e.data["attempt"], e.data["http_status"]) for e in forwarded] == [(1, 200)] * len(sent)
    assert [e for e in events if e.action == "referral.attempted"] == []


async def test_500s_are_retried_with_the_same_id_and_bytes(
    app: FastAPI,
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    partner_server: PartnerServer,
    worker: DeliveryWorker,
    clock: Clock,
) -> None:
    await add_partner(http, api_key, "hospital-a", partner_server.url, services=["medical"])
    await submit(http, api_key)
    partner_server.script = [500, 503]
    await worker.run_once()
    [delivery] = await deliveries(app)
    assert delivery.status == "pending"
    wait = (delivery.next_attempt_at - clock.now).total_seconds()
    assert 5 * 0.8 - 0.01 <= wait <= 5 * 1.2 + 0.01
    assert await worker.run_once() == 0  # not due yet
    clock.advance(wait + 0.1)
    await worker.run_once()
    [delivery] = await deliveries(app)
    clock.advance((delivery.next_attempt_at - clock.now).total_seconds() + 0.1)
    await worker.run_once()
    [delivery] = await deliveries(app)
    assert delivery.status == "delivered"
    assert len(partner_server.received) == 3
    assert len({r.webhook_id for r in partner_server.received}) == 1
    assert len({r.body for r in partner_server.received}) == 1
    async with app.state.sessionmaker() as session:
        attempts = list(
            (await session.execute(select(DeliveryAttempt).order_by(DeliveryAttempt.id))).scalars()
        )
    assert [(a.attempt_no, a.status_code, a.outcome) for a in attempts] == [
        (1, 500, "retry"),
        (2, 503, "retry"),
        (3, 200, "delivered"),
    ]
    assert all(a.latency_ms is not None for a in attempts)
    async with app.state.sessionmaker() as session:
        events = list(await session.execute(select(AuditEvent).order_by(AuditEvent.seq)))
    trail = [
        (e.action, e.data["attempt"], e.data["http_status"], e.data.get("outcome"))
        for (e,) in events
        if e.action in ("referral.attempted", "referral.forwarded")
    ]
    # Every attempt is in the trail: the failed ones as their own events, the one that
    # delivered in the referral's forwarded event.
    assert trail == [
        ("referral.attempted", 1, 500, "retry"),
        ("referral.attempted", 2, 503, "retry"),
        ("referral.forwarded", 3, 200, None),
    ]


async def test_429_retry_after_is_honoured(
    app: FastAPI,
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    partner_server: PartnerServer,
    worker: DeliveryWorker,
    clock: Clock,
) -> None:
    await add_partner(http, api_key, "hospital-a", partner_server.url, services=["medical"])
    await submit(http, api_key)
    partner_server.script = [(429, {"Retry-After": "120"})]
    await worker.run_once()
    [delivery] = await deliveries(app)
    assert delivery.next_attempt_at - clock.now >= timedelta(seconds=120)
    clock.advance(121)
    await worker.run_once()
    [delivery] = await deliveries(app)
    assert delivery.status == "delivered"


async def test_timeouts_and_refused_connections_are_retried(
    app: FastAPI,
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    partner_server: PartnerServer,
    worker: DeliveryWorker,
    clock: Clock,
) -> None:
    await add_partner(http, api_key, "hanging", partner_server.url, services=["medical"])
    await add_partner(http, api_key, "refusing", closed_port_url(), services=["psychological"])
    await submit(http, api_key)
    partner_server.script = ["hang"]
    await worker.run_once()
    async with app.state.sessionmaker() as session:
        attempts = list((await session.execute(select(DeliveryAttempt))).scalars())
    errors = sorted(a.error or "" for a in attempts)
    assert any(e == "timeout" for e in errors)
    assert any(e.startswith("connection:") for e in errors)
    assert {a.outcome for a in attempts} == {"retry"}
    assert {d.status for d in await deliveries(app)} == {"pending"}


async def test_410_pauses_the_partner_and_falls_back(
    app: FastAPI,
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    partner_server: PartnerServer,
    worker: DeliveryWorker,
) -> None:
    backup = PartnerServer().start()
    try:
        await add_partner(
            http, api_key, "a-gone", partner_server.url, services=["medical"], priority=10
        )
        await add_partner(http, api_key, "b-backup", backup.url, services=["medical"])
        receipt = await submit(http, api_key)
        [item] = [r for r in receipt["decision"]["referrals"] if r["service"] == "medical"]
        assert item["partner"]["id"] == "a-gone"
        partner_server.default = 410
        await worker.run_once()
        async with app.state.sessionmaker() as session:
            gone = await session.get(PartnerRow, "a-gone")
            assert gone is not None
            assert gone.status == "paused"
        moved = await referral(app, item["id"])
        assert moved.partner_id == "b-backup"
        assert moved.tried_partner_ids == ["a-gone"]
        await worker.run_once()
        assert (await referral(app, item["id"])).status == "delivered"
        assert len(backup.received) == 1
    finally:
        backup.stop()


async def test_terminal_4xx_falls_back_then_escalates_to_a_person(
    app: FastAPI,
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    partner_server: PartnerServer,
    worker: DeliveryWorker,
) -> None:
    await add_partner(http, api_key, "only-one", partner_server.url, services=["medical"])
    receipt = await submit(http, api_key)
    [item] = [r for r in receipt["decision"]["referrals"] if r["service"] == "medical"]
    partner_server.default = 400
    await worker.run_once()
    escalated = await referral(app, item["id"])
    assert escalated.status == "escalated"
    assert escalated.needs_human is True
    assert escalated.partner_id is None


async def test_exhausted_retries_become_a_dead_letter_that_an_admin_replays(
    app: FastAPI,
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    partner_server: PartnerServer,
    worker: DeliveryWorker,
    clock: Clock,
) -> None:
    await add_partner(http, api_key, "flaky", partner_server.url, services=["medical"])
    receipt = await submit(http, api_key)
    [item] = [r for r in receipt["decision"]["referrals"] if r["service"] == "medical"]
    partner_server.default = 500
    await until_dead(app, worker, clock, "flaky")
    [delivery] = await deliveries(app)
    assert delivery.status == "dead"
    assert delivery.attempt_count == policy.max_attempts()
    dead = await referral(app, item["id"])
    assert (dead.status, dead.needs_human) == ("undeliverable", True)

    admin = await api_key("admin")
    letters = await http.get("/v1/deliveries/dead-letters", headers=bearer(admin))
    assert [d["id"] for d in letters.json()["items"]] == [str(delivery.id)]
    replayed = await http.post(f"/v1/deliveries/{delivery.id}/replay", headers=bearer(admin))
    assert replayed.status_code == 200, replayed.text
    partner_server.default = 200
    await past_the_probe(app, clock, "flaky")
    await worker.run_once()
    [delivery] = await deliveries(app)
    assert delivery.status == "delivered"
    assert {r.webhook_id for r in partner_server.received} == {delivery.webhook_id}
    assert len({r.body for r in partner_server.received}) == 1
    assert (await referral(app, item["id"])).status == "delivered"
    async with app.state.sessionmaker() as session:
        actions = [e.action for e in (await session.execute(select(AuditEvent))).scalars()]
    assert "admin.dead_letter_replayed" in actions


async def test_an_open_circuit_lets_one_probe_through_per_interval(
    app: FastAPI,
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    partner_server: PartnerServer,
    worker: DeliveryWorker,
    clock: Clock,
) -> None:
    await add_partner(http, api_key, "down", partner_server.url, services=["medical"])
    for _ in range(8):
        await submit(http, api_key)
    partner_server.default = 503
    await worker.run_once()  # 8 failures: the circuit opens after FAILURES_TO_OPEN
    async with app.state.sessionmaker() as session:
        circuit = await session.get(PartnerCircuit, "down")
        assert circuit is not None
        assert circuit.state == "open"
    before = len(partner_server.received)
    clock.advance(10 * 60)  # every retry is due now
    await worker.run_once()
    await worker.run_once()
    assert len(partner_server.received) - before == 1  # one probe, not eight requests
    clock.advance(5)
    await worker.run_once()
    assert len(partner_server.received) - before == 1  # still inside the probe interval
    partner_server.default = 200
    clock.advance(24 * 3600)
    for _ in range(5):
        await worker.run_once()
    async with app.state.sessionmaker() as session:
        circuit = await session.get(PartnerCircuit, "down")
        assert circuit is not None
        assert circuit.state == "closed"
    assert {d.status for d in await deliveries(app)} == {"delivered"}
    assert FAILURES_TO_OPEN <= 8


async def test_emergencies_are_claimed_before_routine_work(
    app: FastAPI,
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    partner_server: PartnerServer,
    worker: DeliveryWorker,
) -> None:
    await add_partner(http, api_key, "all", partner_server.url)
    await submit(http, api_key)
    worker.config = type(worker.config)(lease_seconds=30, batch=1, per_partner_cap=50)
    seen: set[str] = set()
    claimed_ranks = []
    for _ in range(len(await deliveries(app))):
        await worker.run_once()
        [new] = [
            d for d in await deliveries(app) if d.status == "delivered" and d.webhook_id not in seen
        ]
        seen.add(new.webhook_id)
        claimed_ranks.append(new.urgency_rank)
    assert claimed_ranks[0] == 2  # the emergency went first
    assert claimed_ranks == sorted(claimed_ranks, reverse=True)


async def test_a_dead_workers_lease_expires_and_another_worker_claims_it(
    app: FastAPI,
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    partner_server: PartnerServer,
    worker: DeliveryWorker,
    clock: Clock,
) -> None:
    from app.delivery import outbox

    await add_partner(http, api_key, "x", partner_server.url, services=["medical"])
    await submit(http, api_key)
    async with app.state.sessionmaker() as session:
        taken = await outbox.claim(
            session, worker_id="dead-worker", now=clock.now, config=outbox.ClaimConfig()
        )
        await session.commit()
    assert len(taken) == 1
    assert await worker.run_once() == 0  # leased by a worker that will never finish
    clock.advance(31)
    assert await worker.run_once() == 1
    assert [d.status for d in await deliveries(app)] == ["delivered"]


async def test_the_request_id_flows_to_the_partner_and_the_audit(
    app: FastAPI,
    http: httpx.AsyncClient,
    api_key: KeyFactory,
    partner_server: PartnerServer,
    worker: DeliveryWorker,
) -> None:
    from tests.factories import adult_consenting

    await add_partner(http, api_key, "traced", partner_server.url, services=["medical"])
    clinic = await api_key("clinic", "Caravana de la Vida")
    response = await http.post(
        "/v1/screenings",
        json=adult_consenting(),
        headers={**bearer(clinic), "X-Request-ID": "clinic-tablet-3-req-0042"},
    )
    assert response.status_code == 201
    assert response.headers["x-request-id"] == "clinic-tablet-3-req-0042"
    await worker.run_once()
    assert [r.headers["x-request-id"] for r in partner_server.received] == [
        "clinic-tablet-3-req-0042"
    ]
    async with app.state.sessionmaker() as session:
        traced = {
            e.action
            for e in (await session.execute(select(AuditEvent))).scalars()
            if e.request_id == "clinic-tablet-3-req-0042"
        }
    assert {"screening.received", "decision.made", "referral.created"} <= traced
