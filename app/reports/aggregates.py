"""Aggregate reports for auditors and admins, k-anonymous (app/reports/suppression.py).

Four reports over whole ISO weeks (UTC), so the same week is the same line in every query
(overlapping periods cannot be subtracted from each other), and with no filter but the
period (a filtered report could be subtracted from an unfiltered one):

* ``referrals``: referrals per week, by service and urgency (a line per week, its total);
* ``acknowledgement``: per partner, how long it took to acknowledge a referral (from the
  moment it was given the referral to its first report), median and 90th percentile;
* ``outcomes``: per week, the referrals that stayed with their first partner, that fell
  back to another, and that needed a person (held, escalated or dead-lettered at some
  point), with the fallback and escalation rates;
* ``rules``: how many decisions each rule fired in.

"People" are subjects (one per person screened): a figure about fewer than k of them is
suppressed. Reads only.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import Action
from app.models import AuditEvent, Decision, Referral, ReferralEvent, Screening
from app.referrals.views import partner_names
from app.reports.suppression import Cell, Line, suppress_line, suppress_values

SERVICES = ("medical", "psychological", "legal", "protection")
URGENCIES = ("emergency", "urgent", "routine")
OUTCOMES = ("direct", "fell_back", "escalated")
#: The longest period one report covers.
MAX_WEEKS = 106
#: Statuses a partner reports that acknowledge a referral.
ACKNOWLEDGING = frozenset({"received", "accepted", "rejected", "in-progress", "on-hold"})
NEEDED_A_PERSON = frozenset({"held", "escalated", "undeliverable"})


@dataclass(frozen=True, slots=True)
class Period:
    """Whole ISO weeks: from ``since``'s Monday up to the Monday after ``until``."""

    start: date
    end: date

    @classmethod
    def of(cls, since: date | None, until: date | None, today: date) -> Period:
        until = until or today
        since = since or until - timedelta(weeks=12)
        start = since - timedelta(days=since.weekday())
        end = until - timedelta(days=until.weekday()) + timedelta(weeks=1)
        if end <= start:
            raise ValueError("until is before since")
        if (end - start).days > MAX_WEEKS * 7:
            raise ValueError(f"a report covers at most {MAX_WEEKS} weeks")
        return cls(start, end)

    @property
    def bounds(self) -> tuple[datetime, datetime]:
        return (
            datetime.combine(self.start, time(0), UTC),
            datetime.combine(self.end, time(0), UTC),
        )


def week_of(moment: datetime) -> str:
    year, week, _ = moment.astimezone(UTC).isocalendar()
    return f"{year}-W{week:02d}"


@dataclass
class Row:
    key: str
    label: str | None
    values: dict[str, float | int | None]
    total: int | None = None
    suppressed: list[str] = field(default_factory=list)


@dataclass
class Report:
    name: str
    k: int
    period: Period
    #: What the counts count ("referrals", "decisions").
    unit: str
    columns: list[str]
    rows: list[Row]

    def to_json(self) -> dict[str, Any]:
        return {
            "report": self.name,
            "k": self.k,
            "since": self.period.start.isoformat(),
            "until": (self.period.end - timedelta(days=1)).isoformat(),
            "unit": self.unit,
            "columns": self.columns,
            "rows": [
                {
                    "key": r.key,
                    "label": r.label,
                    "values": r.values,
                    "total": r.total,
                    "suppressed": r.suppressed,
                }
                for r in self.rows
            ],
        }


def _row(key: str, line: Line[str], label: str | None = None) -> Row:
    return Row(
        key,
        label,
        dict(line.cells),
        line.total,
        sorted(line.suppressed) + (["total"] if line.total is None else []),
    )


async def _referrals(session: AsyncSession, period: Period) -> list[Referral]:
    start, end = period.bounds
    query = select(Referral).where(Referral.created_at >= start, Referral.created_at < end)
    return list((await session.execute(query.order_by(Referral.created_at))).scalars())


async def referrals_per_week(session: AsyncSession, period: Period, k: int) -> Report:
    columns = [f"{s}/{u}" for s in SERVICES for u in URGENCIES]
    weeks: dict[str, dict[str, Cell]] = {}
    for referral in await _referrals(session, period):
        cells = weeks.setdefault(week_of(referral.created_at), {c: Cell() for c in columns})
        cells[f"{referral.service}/{referral.urgency}"].add(referral.subject_id)
    rows = [_row(week, suppress_line(cells, k)) for week, cells in sorted(weeks.items())]
    return Report("referrals", k, period, "referrals", columns, rows)


async def outcomes_per_week(session: AsyncSession, period: Period, k: int) -> Report:
    referrals = await _referrals(session, period)
    ids = [r.id for r in referrals]
    needed: set[Any] = set()
    if ids:
        held = await session.execute(
            select(ReferralEvent.referral_id).where(
                ReferralEvent.referral_id.in_(ids),
                ReferralEvent.to_status.in_(NEEDED_A_PERSON),
            )
        )
        escalated = await session.execute(
            select(AuditEvent.referral_id).where(
                AuditEvent.referral_id.in_(ids),
                AuditEvent.action == Action.referral_escalated.value,
            )
        )
        needed = set(held.scalars()) | set(escalated.scalars())
    weeks: dict[str, dict[str, Cell]] = {}
    for referral in referrals:
        cells = weeks.setdefault(week_of(referral.created_at), {o: Cell() for o in OUTCOMES})
        if referral.id in needed or referral.needs_human:
            outcome = "escalated"
        elif referral.tried_partner_ids:
            outcome = "fell_back"
        else:
            outcome = "direct"
        cells[outcome].add(referral.subject_id)
    rows = []
    for week, cells in sorted(weeks.items()):
        row = _row(week, suppress_line(cells, k))
        for name, outcome in (("fallback_rate", "fell_back"), ("escalation_rate", "escalated")):
            shown = row.values.get(outcome)
            # A rate is shown only where both its parts are.
            row.values[name] = (
                round(shown / row.total, 4) if shown is not None and row.total else None
            )
            if row.values[name] is None:
                row.suppressed.append(name)
        rows.append(row)
    columns = [*OUTCOMES, "fallback_rate", "escalation_rate"]
    return Report("outcomes", k, period, "referrals", columns, rows)


def _p90(values: list[float]) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=10, method="inclusive")[-1]


async def acknowledgement(session: AsyncSession, period: Period, k: int) -> Report:
    """Hours from a partner being given a referral to its first report on it."""
    referrals = {r.id: r for r in await _referrals(session, period)}
    steps: Iterable[ReferralEvent] = (
        (
            await session.execute(
                select(ReferralEvent)
                .where(ReferralEvent.referral_id.in_(list(referrals)))
                .order_by(ReferralEvent.referral_id, ReferralEvent.id)
            )
        ).scalars()
        if referrals
        else []
    )
    given: dict[tuple[Any, str], datetime] = {}
    hours: dict[str, list[float]] = defaultdict(list)
    people: dict[str, set[Any]] = defaultdict(set)
    for step in steps:
        if step.partner_id is None:
            continue
        key = (step.referral_id, step.partner_id)
        if step.to_status == "queued" and key not in given:
            given[key] = step.at
        elif step.to_status in ACKNOWLEDGING and step.actor_role == "partner" and key in given:
            hours[step.partner_id].append((step.at - given.pop(key)).total_seconds() / 3600)
            people[step.partner_id].add(referrals[step.referral_id].subject_id)
    hidden = suppress_values(((p, len(s)) for p, s in people.items()), k)
    names = await partner_names(session, set(hours))
    rows = []
    for partner_id in sorted(hours):
        values = sorted(hours[partner_id])
        shown = partner_id not in hidden
        rows.append(
            Row(
                partner_id,
                names.get(partner_id),
                {
                    "referrals": len(values) if shown else None,
                    "median_hours": round(statistics.median(values), 2) if shown else None,
                    "p90_hours": round(_p90(values), 2) if shown else None,
                },
                suppressed=[] if shown else ["referrals", "median_hours", "p90_hours"],
            )
        )
    columns = ["referrals", "median_hours", "p90_hours"]
    return Report("acknowledgement", k, period, "referrals", columns, rows)


async def rules_fired(session: AsyncSession, period: Period, k: int) -> Report:
    start, end = period.bounds
    found = await session.execute(
        select(Decision.trace, Screening.subject_id)
        .join(Screening, Screening.id == Decision.screening_id)
        .where(Decision.created_at >= start, Decision.created_at < end)
    )
    counts: dict[str, Cell] = defaultdict(Cell)
    for trace, subject_id in found:
        for rule_id in {f.get("rule_id") for f in (trace or {}).get("fired", [])}:
            if isinstance(rule_id, str):
                counts[rule_id].add(subject_id)
    hidden = suppress_values(((r, len(c.people)) for r, c in counts.items()), k)
    ordered = sorted(counts.items(), key=lambda item: (-item[1].count, item[0]))
    rows = [
        Row(
            rule_id,
            None,
            {"decisions": None if rule_id in hidden else cell.count},
            suppressed=["decisions"] if rule_id in hidden else [],
        )
        for rule_id, cell in ordered
    ]
    return Report("rules", k, period, "decisions", ["decisions"], rows)


REPORTS = {
    "referrals": referrals_per_week,
    "acknowledgement": acknowledgement,
    "outcomes": outcomes_per_week,
    "rules": rules_fired,
}


def to_csv(report: Report) -> str:
    """One line per row: key, label, each column, total. A suppressed figure is written
    ``suppressed`` (never a number, so it is never mistaken for a zero)."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    has_total = report.name in ("referrals", "outcomes")
    writer.writerow(["key", "label", *report.columns, *(["total"] if has_total else [])])
    for row in report.rows:
        cells = [_csv_value(row.values.get(c)) for c in report.columns]
        total = [_csv_value(row.total)] if has_total else []
        writer.writerow([_csv_text(row.key), _csv_text(row.label or ""), *cells, *total])
    return out.getvalue()


def _csv_value(value: float | int | None) -> str:
    return "suppressed" if value is None else str(value)


def _csv_text(value: str) -> str:
    """A name a spreadsheet would read as a formula is written as text."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
