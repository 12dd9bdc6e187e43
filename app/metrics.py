"""Prometheus metrics. Labels carry codes, partner ids and route templates only: never a
person's data, a screening id or a free-text value.

Counters and histograms count this process's work. With several server processes
(``ruta serve --workers N``) each writes them to files in ``PROMETHEUS_MULTIPROC_DIR``
(prometheus_client's multiprocess mode) and a scrape, whichever process answers it, sums
every process's files: counters never go backwards between scrapes. The gauges are not
kept in any process: they are read from the database at scrape time
(:class:`DatabaseGauges`), so every process and replica reports the same values.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

_Metric = TypeVar("_Metric", bound=MetricWrapperBase)
_CHILDREN: dict[tuple[MetricWrapperBase, tuple[str, ...]], MetricWrapperBase] = {}


def child(metric: _Metric, *labels: str) -> _Metric:
    """``metric.labels(*labels)``, looked up once per label set: ``labels()`` validates and
    takes a lock on every call, and intake and the delivery worker count on every request,
    decision and attempt. Only for metrics whose label sets are bounded and never removed."""
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


@dataclass(frozen=True, slots=True)
class DatabaseState:
    """What the gauges show, read from the database at scrape time."""

    outbox_backlog: int = 0
    oldest_due_age_seconds: float = 0.0
    dead_letters: int = 0
    referrals_needing_a_person: int = 0
    audit_chain_length: int = 0
    #: Each partner with a circuit breaker, and whether it is open.
    circuits: dict[str, bool] = field(default_factory=dict)


#: The gauges with one value each: name, help, and the DatabaseState field it shows.
_DATABASE_GAUGES = (
    ("ruta_outbox_backlog", "Deliveries not yet finished.", "outbox_backlog"),
    (
        "ruta_outbox_oldest_due_age_seconds",
        "Age of the oldest delivery that is due now.",
        "oldest_due_age_seconds",
    ),
    ("ruta_dead_letters", "Deliveries that exhausted their retries.", "dead_letters"),
    ("ruta_audit_chain_length", "Events in the audit chain.", "audit_chain_length"),
    (
        "ruta_referrals_needing_a_person",
        "Referrals held, escalated or undeliverable.",
        "referrals_needing_a_person",
    ),
)


class DatabaseGauges(Collector):
    """The gauges of one scrape, from a :class:`DatabaseState`."""

    def __init__(self, state: DatabaseState) -> None:
        self.state = state

    def collect(self) -> Iterable[Metric]:
        for name, documentation, attribute in _DATABASE_GAUGES:
            yield GaugeMetricFamily(name, documentation, value=getattr(self.state, attribute))
        circuits = GaugeMetricFamily(
            "ruta_circuit_open",
            "1 when a partner's circuit breaker is open.",
            labels=["partner_id"],
        )
        for partner_id, is_open in sorted(self.state.circuits.items()):
            circuits.add_metric([partner_id], 1 if is_open else 0)
        yield circuits


#: prometheus_client's multiprocess mode: set, every process writes its counters here.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def exposition(state: DatabaseState) -> bytes:
    """The text a scrape returns: every server process's counters and histograms (this
    process's alone when there is one), then the database's gauges."""
    if os.environ.get(MULTIPROC_ENV):
        processes = CollectorRegistry()
        MultiProcessCollector(processes)  # type: ignore[no-untyped-call]
    else:
        processes = REGISTRY
    database = CollectorRegistry()
    database.register(DatabaseGauges(state))
    return generate_latest(processes) + generate_latest(database)


@contextmanager
def multiprocess_directory(processes: int) -> Iterator[Path | None]:
    """Where `ruta serve`'s processes keep their counters while it runs.

    With ``PROMETHEUS_MULTIPROC_DIR`` set, that directory (one per `ruta serve`), emptied of
    earlier runs' files: their counts would otherwise be added to this run's. Else, with
    several processes, a new temporary directory, removed at the end. Else none: one process
    counts in memory. Called before the worker processes start: they inherit the variable.
    """
    named = os.environ.get(MULTIPROC_ENV)
    if named:
        path = Path(named)
        path.mkdir(parents=True, exist_ok=True)
        # Files are named after the process that writes them; this process's own may be
        # open already (its metrics were created at import).
        mine = f"_{os.getpid()}.db"
        for stale in path.glob("*.db"):
            if not stale.name.endswith(mine):
                stale.unlink(missing_ok=True)
        yield path
        return
    if processes <= 1:
        yield None
        return
    path = Path(tempfile.mkdtemp(prefix="ruta-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    try:
        yield path
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)
