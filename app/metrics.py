"""Prometheus metrics. Labels carry codes, partner ids and route templates only: never a
person's data, a screening id or a free-text value."""

from __future__ import annotations

from typing import TypeVar

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

_Metric = TypeVar("_Metric", bound=MetricWrapperBase)
_CHILDREN: dict[tuple[MetricWrapperBase, tuple[str, ...]], MetricWrapperBase] = {}


def child(metric: _Metric, *labels: str) -> _Metric:
    """``metric.labels(*labels)``, looked up once per label set: ``labels()`` validates and
    takes a lock on every call, and intake and the delivery worker count on every request,
    decision and attempt. Only for metrics whose label sets are bounded and never removed
    (not ``CIRCUITS_OPEN``, which ``/metrics`` clears)."""
    key = (metric, labels)
    found = _CHILDREN.get(key)
    if found is None:
        found = _CHILDREN[key] = metric.labels(*labels)
    return found  # type: ignore[return-value]  # stored under its own metric


DECISIONS = Counter(
    "ruta_decisions_total",
    "Referrals decided, by service, urgency and legal basis.",
    ["service", "urgency", "legal_basis"],
)
RULES_FIRED = Counter("ruta_rules_fired_total", "Rules that fired, by rule id.", ["rule_id"])
INTAKE_GROUP_SIZE = Histogram(
    "ruta_intake_group_size",
    "Screenings committed per intake transaction (group commit).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
INTAKE_GROUP_SECONDS = Histogram(
    "ruta_intake_group_seconds",
    "Time to write and commit one intake group (a slow database shows here first).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
INTAKE_GROUP_RETRIES = Counter(
    "ruta_intake_group_retries_total",
    "Intake groups that failed and were written again one screening at a time.",
)
DELIVERY_ATTEMPTS = Counter(
    "ruta_delivery_attempts_total",
    "Delivery attempts by partner and outcome.",
    ["partner_id", "outcome"],
)
DELIVERY_LATENCY = Histogram(
    "ruta_delivery_latency_seconds",
    "Partner endpoint latency by partner.",
    ["partner_id"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0),
)
OUTBOX_BACKLOG = Gauge("ruta_outbox_backlog", "Deliveries not yet finished.")
OUTBOX_OLDEST_DUE_AGE = Gauge(
    "ruta_outbox_oldest_due_age_seconds", "Age of the oldest delivery that is due now."
)
DEAD_LETTERS = Gauge("ruta_dead_letters", "Deliveries that exhausted their retries.")
CIRCUITS_OPEN = Gauge(
    "ruta_circuit_open", "1 when a partner's circuit breaker is open.", ["partner_id"]
)
AUDIT_CHAIN_LENGTH = Gauge("ruta_audit_chain_length", "Events in the audit chain.")
REFERRALS_NEEDING_A_PERSON = Gauge(
    "ruta_referrals_needing_a_person", "Referrals held, escalated or undeliverable."
)
