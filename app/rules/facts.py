"""The facts a decision reads: the screening as it stands at the moment of the decision.

A screening is often posted hours or days after it was collected (a clinic in a mining camp
syncs when it reaches a signal). Clinical windows run from the event to **now**, not to
the screening, so the rules must read the time that has really passed
(docs/protocol.md, rule 6):

* ``health.hours_since_sexual_violence`` is the hours stated at the screening plus the hours
  between ``source.screened_at`` and the decision;
* ``subject.age`` is the stated age, or the age computed from the date of birth on the day
  of the decision; when both are given and disagree by more than a year the age is
  **disputed** and the rules read the lower one (a child is treated as a child until the
  age is verified: docs/protocol.md, rule 1).

Pure: the caller passes ``now``. Every change is listed in :attr:`Facts.adjustments`, which
the decision's trace keeps, so an auditor can replay the decision from the stored screening
and the decision's time. The date of birth itself never appears there (it is personal).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from app.schemas.screening import ScreeningIn

#: A stated age and a date of birth further apart than this make the age disputed.
AGE_TOLERANCE_YEARS = 1
#: The hours field's schema bound: an adjusted value never exceeds what a client may send.
MAX_HOURS = 24 * 365 * 5


@dataclass(frozen=True, slots=True)
class Facts:
    """The screening as the rules read it at ``at`` (``None``: at the screening itself)."""

    screening: ScreeningIn
    at: datetime | None = None
    #: field path -> what was read instead, and from what (no personal values).
    adjustments: dict[str, dict[str, Any]] = field(default_factory=dict)


def years_between(born: date, on: date) -> int:
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def facts_at(screening: ScreeningIn, now: datetime | None) -> Facts:
    """The screening's facts at ``now`` (see the module docstring). ``now=None`` reads the
    screening as collected, with the age from the date of birth on the screening's day."""
    if now is not None and now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    screened_at = screening.source.screened_at
    on = (now or screened_at).date()
    adjustments: dict[str, dict[str, Any]] = {}
    subject_update: dict[str, Any] = {}
    health_update: dict[str, Any] = {}

    subject = screening.subject
    if subject.date_of_birth is not None:
        from_birth = years_between(subject.date_of_birth, on)
        stated = subject.age
        if stated is None:
            subject_update["age"] = from_birth
            adjustments["subject.age"] = {"source": "date_of_birth", "value": from_birth}
        elif abs(stated - from_birth) > AGE_TOLERANCE_YEARS:
            lower = min(stated, from_birth)
            subject_update.update(age=lower, age_disputed=True)
            adjustments["subject.age"] = {
                "source": "disputed",
                "stated": stated,
                "from_date_of_birth": from_birth,
                "value": lower,
            }

    hours = screening.health.hours_since_sexual_violence
    if hours is not None and now is not None and now > screened_at:
        elapsed = (now - screened_at).total_seconds() / 3600
        adjusted = round(min(hours + elapsed, MAX_HOURS), 2)
        if adjusted != hours:
            health_update["hours_since_sexual_violence"] = adjusted
            adjustments["health.hours_since_sexual_violence"] = {
                "source": "elapsed_since_screening",
                "at_screening": hours,
                "elapsed_hours": round(elapsed, 2),
                "value": adjusted,
            }

    if not subject_update and not health_update:
        return Facts(screening, now, adjustments)
    update: dict[str, Any] = {}
    if subject_update:
        update["subject"] = subject.model_copy(update=subject_update)
    if health_update:
        update["health"] = screening.health.model_copy(update=health_update)
    return Facts(screening.model_copy(update=update), now, adjustments)
